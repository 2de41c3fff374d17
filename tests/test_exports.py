import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpo.cli import main
from bpo.data.formats import read_bpo_release
from bpo.data.records import Pair, chat_messages
from bpo.errors import ConfigError, ErrorPolicy, ImageError
from bpo.exports import (
    IMAGE_TOKEN,
    export_bpo_release,
    export_llamafactory,
    export_pairs,
    export_trl,
)

SIZES = {"astronaut.jpg": (64, 48), "camera.png": (40, 30)}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("images")
    # An RGB JPEG (its bytes are kept) and a grayscale PNG (stored as an RGB PNG).
    Image.fromarray(data.astronaut()).resize(SIZES["astronaut.jpg"]).save(root / "astronaut.jpg")
    Image.fromarray(data.camera()).resize(SIZES["camera.png"]).save(root / "camera.png")
    return root


def make_pairs():
    question = [{"role": "user", "content": "What is in the image?"}]
    multi_turn = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is this?"},
        {"role": "assistant", "content": "A photo."},
        {"role": "user", "content": "Who holds the camera?"},
    ]
    gold = "An astronaut holds a helmet beside a flag."
    return [
        Pair(
            "s1/image-weakening/0",
            "astronaut.jpg",
            question,
            gold,
            "A man rides a horse.",
            "image-weakening",
        ),
        Pair(
            "s2/llm-injection/0",
            "camera.png",
            multi_turn,
            "A man.",
            "A woman with a dog.",
            "llm-injection",
        ),
        Pair(
            "s1/cooccurrence/0",
            "astronaut.jpg",
            question,
            gold,
            "An astronaut holds a cup.",
            "cooccurrence",
        ),
        Pair(
            "s1/llm-injection/0",
            "astronaut.jpg",
            question,
            gold,
            "Two astronauts and a rocket.",
            "llm-injection",
        ),
        Pair(
            "t1/llm-injection/0",
            None,
            [{"role": "user", "content": "Say hi."}],
            "Hi.",
            "Bye.",
            "llm-injection",
        ),
    ]


@pytest.fixture
def pairs_path(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in make_pairs()), encoding="utf-8")
    return path


@pytest.fixture
def trl_dataset(pairs_path, image_root):
    result = export_trl(pairs_path, pairs_path.parent, image_root=image_root)
    return result, pairs_path.parent / "pairs_trl", pairs_path.parent / "pairs_trl.parquet"


# --- TRL --------------------------------------------------------------------------------


def test_trl_export_loads_back_with_pil_images_of_the_right_size(trl_dataset, image_root):
    import datasets

    result, folder, _ = trl_dataset
    assert result.rows == result.pairs == 5 and not result.left_out
    dataset = datasets.load_from_disk(str(folder))
    assert dataset.column_names == ["id", "images", "prompt", "chosen", "rejected", "strategy"]
    assert isinstance(dataset.features["images"].feature, datasets.Image)
    pairs = make_pairs()
    for row, pair in zip(dataset, pairs, strict=True):
        assert row["id"] == pair.id and row["strategy"] == pair.strategy
        assert row["chosen"] == [
            {"role": "assistant", "content": [{"type": "text", "text": pair.chosen}]}
        ]
        assert row["rejected"] == [
            {"role": "assistant", "content": [{"type": "text", "text": pair.rejected}]}
        ]
        # Arrow gives every content part both keys; the image part's text is None.
        expected = chat_messages(pair.prompt, with_image=pair.image is not None)
        for message in expected:
            for part in message["content"]:
                part.setdefault("text", None)
        assert row["prompt"] == expected
        if pair.image is None:
            assert row["images"] == []
            continue
        (image,) = row["images"]
        assert isinstance(image, Image.Image)
        assert image.size == SIZES[pair.image] and image.mode == "RGB"
        with Image.open(image_root / pair.image) as original:
            assert np.array_equal(np.asarray(image), np.asarray(original.convert("RGB")))


def test_trl_export_keeps_rgb_jpeg_bytes_and_converts_other_images(trl_dataset, image_root):
    import datasets

    _, folder, _ = trl_dataset
    raw = datasets.load_from_disk(str(folder)).cast_column(
        "images", datasets.List(datasets.Image(decode=False))
    )
    assert raw[0]["images"][0]["bytes"] == (image_root / "astronaut.jpg").read_bytes()
    assert raw[1]["images"][0]["bytes"] != (image_root / "camera.png").read_bytes()


def test_trl_parquet_reads_back_to_the_same_rows(trl_dataset, tmp_path):
    import datasets

    _, folder, parquet = trl_dataset
    from_disk = datasets.load_from_disk(str(folder))
    from_parquet = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(tmp_path / "cache"))
    assert from_parquet.features == from_disk.features
    assert len(from_parquet) == len(from_disk)
    for left, right in zip(from_disk, from_parquet, strict=True):
        assert {k: v for k, v in left.items() if k != "images"} == {
            k: v for k, v in right.items() if k != "images"
        }
        assert [np.asarray(i).tolist() for i in left["images"]] == [
            np.asarray(i).tolist() for i in right["images"]
        ]


def test_trl_rows_pass_trl_data_utilities_and_the_vision_collator(trl_dataset, tiny_llava_path):
    import datasets
    from transformers import AutoProcessor
    from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    _, folder, _ = trl_dataset
    dataset = datasets.load_from_disk(str(folder))
    processor = AutoProcessor.from_pretrained(tiny_llava_path)
    row = dataset[1]  # system prompt, earlier turns, an image
    assert is_conversational(row)
    example = {
        "prompt": prepare_multimodal_messages(row["prompt"], images=row["images"]),
        "chosen": row["chosen"],
        "rejected": row["rejected"],
    }
    text = apply_chat_template(example, processor)
    assert text["prompt"].count(processor.image_token) == 1
    assert "Answer briefly." in text["prompt"] and text["prompt"].rstrip().endswith("ASSISTANT:")
    assert text["chosen"].strip().startswith("A man.")
    assert text["rejected"].strip().startswith("A woman with a dog.")

    batch = DataCollatorForVisionPreference(processor)([dict(dataset[0]), dict(dataset[1])])
    assert batch["input_ids"].shape[0] == 4  # chosen and rejected of two pairs
    assert batch["pixel_values"].shape[0] == 4
    assert batch["completion_mask"].sum() > 0


def test_trl_export_trains_one_dpo_step_without_conversion(trl_dataset, tiny_llava_path, tmp_path):
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer

    _, folder, _ = trl_dataset
    dataset = datasets.load_from_disk(str(folder)).filter(lambda row: len(row["images"]) == 1)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_path)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = DPOConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_train_batch_size=len(dataset),
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=AutoProcessor.from_pretrained(tiny_llava_path),
    )
    trainer.train()
    changed = [
        n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])
    ]
    assert changed


def test_trl_export_missing_image_skip_or_raise(tmp_path, image_root):
    pair = make_pairs()[0]
    missing = Pair(pair.id, "nowhere.jpg", pair.prompt, pair.chosen, pair.rejected, pair.strategy)
    pairs_path = tmp_path / "pairs.jsonl"
    pairs_path.write_text(
        json.dumps(missing.to_dict()) + "\n" + json.dumps(make_pairs()[2].to_dict()) + "\n"
    )
    policy = ErrorPolicy("skip")
    result = export_trl(pairs_path, tmp_path, image_root=image_root, policy=policy)
    assert result.pairs == 1 and result.left_out == {"missing-image": 1}
    assert policy.counts == {"missing-image": 1}
    with pytest.raises(ImageError, match=r"s1/image-weakening/0"):
        export_trl(pairs_path, tmp_path / "again", image_root=image_root)


# --- BPO release ------------------------------------------------------------------------


def test_bpo_export_matches_the_release_format_field_for_field(pairs_path):
    result = export_bpo_release(pairs_path, pairs_path.parent)
    records = json.loads((pairs_path.parent / "pairs_bpo.json").read_text())
    assert isinstance(records, list) and len(records) == result.rows == 1
    assert result.pairs == 3
    assert result.left_out == {"multi-turn-prompt": 1, "no-image": 1}
    (record,) = records
    assert list(record) == ["prompt", "image", "completions"]
    assert record["prompt"] == f"What is in the image?\n{IMAGE_TOKEN}"
    assert record["image"] == "astronaut.jpg"
    for completion in record["completions"]:
        assert list(completion) == ["score", "response", "type"]
        assert type(completion["score"]) is int
        assert isinstance(completion["response"], str) and isinstance(completion["type"], str)
    gold, *negatives = record["completions"]
    assert gold == {"score": 1, "response": make_pairs()[0].chosen, "type": "gt"}
    assert [(c["score"], c["type"], c["response"]) for c in negatives] == [
        (0, "mllm-hal", "A man rides a horse."),
        (0, "cooccurrence", "An astronaut holds a cup."),
        (0, "llm-hal", "Two astronauts and a rocket."),
    ]


def test_bpo_export_reads_back_to_the_same_samples_and_negatives(pairs_path):
    export_bpo_release(pairs_path, pairs_path.parent)
    ((sample, negatives),) = list(read_bpo_release(pairs_path.parent / "pairs_bpo.json"))
    pair = make_pairs()[0]
    assert (sample.image, sample.prompt, sample.response) == (pair.image, pair.prompt, pair.chosen)
    written = [p for p in make_pairs() if p.image == "astronaut.jpg"]
    assert [(n.strategy, n.text, n.sample_id) for n in negatives] == [
        (p.strategy, p.rejected, sample.id) for p in written
    ]


# --- LLaMA-Factory ----------------------------------------------------------------------


def test_llamafactory_export_matches_the_sharegpt_preference_format(pairs_path, image_root):
    result = export_llamafactory(pairs_path, pairs_path.parent, image_root=image_root)
    assert result.rows == result.pairs == 5
    records = json.loads((pairs_path.parent / "pairs_llamafactory.json").read_text())
    pairs = make_pairs()
    for record, pair in zip(records, pairs, strict=True):
        expected_keys = ["conversations", "chosen", "rejected"]
        expected_keys += ["images"] if pair.image else []
        assert list(record) == expected_keys
        assert record["chosen"] == {"from": "gpt", "value": pair.chosen}
        assert record["rejected"] == {"from": "gpt", "value": pair.rejected}
        turns = record["conversations"]
        assert all(list(turn) == ["from", "value"] for turn in turns)
        # An optional system turn, then human/gpt alternating and ending with human.
        roles = [turn["from"] for turn in turns if turn["from"] != "system"]
        assert roles == ["human", "gpt"] * (len(roles) // 2) + ["human"]
        tokens = sum(turn["value"].count(IMAGE_TOKEN) for turn in turns)
        if pair.image:
            first_human = next(turn for turn in turns if turn["from"] == "human")
            assert first_human["value"].startswith(IMAGE_TOKEN) and tokens == 1
            (path,) = record["images"]
            assert Path(path).is_absolute() and Path(path) == (image_root / pair.image).resolve()
        else:
            assert tokens == 0
    assert records[1]["conversations"][0] == {"from": "system", "value": "Answer briefly."}


def test_llamafactory_dataset_info_declares_the_file_and_keeps_other_entries(pairs_path):
    info_path = pairs_path.parent / "dataset_info.json"
    info_path.write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    export_llamafactory(pairs_path, pairs_path.parent, name="bpo_pairs")
    info = json.loads(info_path.read_text())
    assert info["alpaca_en_demo"] == {"file_name": "alpaca_en_demo.json"}
    assert info["bpo_pairs"] == {
        "file_name": "bpo_pairs_llamafactory.json",
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {
            "messages": "conversations",
            "chosen": "chosen",
            "rejected": "rejected",
            "images": "images",
        },
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "system_tag": "system",
        },
    }
    records = json.loads((pairs_path.parent / "bpo_pairs_llamafactory.json").read_text())
    assert records[0]["images"] == ["astronaut.jpg"]  # no image root: paths as in the pairs


def test_export_refuses_an_unknown_format(pairs_path):
    with pytest.raises(ConfigError, match="valid formats: trl, bpo, llamafactory"):
        export_pairs("axolotl", pairs_path, pairs_path.parent)


def test_cli_writes_every_export_into_the_export_dir(tmp_path, image_root):
    samples = tmp_path / "samples.jsonl"
    negatives = tmp_path / "negatives.jsonl"
    pair = make_pairs()[0]
    samples.write_text(
        json.dumps(
            {"id": "s1", "image": pair.image, "prompt": pair.prompt, "response": pair.chosen}
        )
        + "\n"
    )
    negatives.write_text(
        json.dumps(
            {"id": pair.id, "sample_id": "s1", "strategy": pair.strategy, "text": pair.rejected}
        )
        + "\n"
    )
    exports = tmp_path / "exports"
    argv = ["pairs", str(samples), str(negatives), "--out", str(tmp_path / "pairs.jsonl")]
    argv += ["--image-root", str(image_root), "--export", "trl", "bpo", "llamafactory"]
    assert main([*argv, "--export-dir", str(exports)]) == 0
    names = sorted(path.name for path in exports.iterdir())
    assert names == [
        "dataset_info.json",
        "pairs_bpo.json",
        "pairs_llamafactory.json",
        "pairs_trl",
        "pairs_trl.parquet",
    ]


def test_empty_pairs_export_as_empty_json_but_not_as_a_trl_dataset(tmp_path):
    pairs_path = tmp_path / "pairs.jsonl"
    pairs_path.write_text("")
    assert export_bpo_release(pairs_path, tmp_path).rows == 0
    assert json.loads((tmp_path / "pairs_bpo.json").read_text()) == []
    assert export_llamafactory(pairs_path, tmp_path).rows == 0
    with pytest.raises(ConfigError, match="nothing to export"):
        export_trl(pairs_path, tmp_path)


def test_a_failed_trl_export_keeps_the_previous_one_and_its_cache_is_cleared(
    trl_dataset, image_root, monkeypatch
):
    import datasets

    _, folder, parquet = trl_dataset
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    before_parquet = parquet.read_bytes()
    cache = folder.parent / ".pairs_trl.cache"
    assert not cache.exists()
    cache.mkdir()  # as a killed export leaves it
    (cache / "stale.arrow").write_bytes(b"half")

    def save_half(self, path, **kwargs):
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_half)
    with pytest.raises(OSError, match="disk full"):
        export_trl(folder.parent / "pairs.jsonl", folder.parent, image_root=image_root)
    # The old export is whole and in place; nothing of the failed one is left.
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert parquet.read_bytes() == before_parquet
    assert not cache.exists()
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []
