import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpo.data.records import Pair, chat_messages
from bpo.errors import ErrorPolicy, ImageError
from bpo.exports import export_trl
from tests.exports.examples import SIZES, make_pairs


@pytest.fixture
def trl_dataset(pairs_path, image_root):
    result = export_trl(pairs_path, pairs_path.parent, image_root=image_root)
    return result, pairs_path.parent / "pairs_trl", pairs_path.parent / "pairs_trl.parquet"


def test_trl_export_loads_back_with_pil_images_of_the_right_size(trl_dataset, image_root):
    import datasets

    result, folder, _ = trl_dataset
    assert result.rows == result.pairs == 5 and not result.left_out
    dataset = datasets.load_from_disk(str(folder))
    assert dataset.column_names == [
        "id", "images", "prompt", "chosen", "rejected", "strategy", "weakening",
    ]  # fmt: skip
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
