"""Pairs to token sequences: TRL's batches token for token, truncation, clear errors, caching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bpo.errors import ConfigError, ImageError
from bpo.train import data as train_data
from bpo.train.data import PreferenceCollator, tokenize_pairs
from bpo.train.model import load_processor
from tests.train.conftest import PairData, tiny_recipe, write_pairs

ARCHES = {"llava": "tiny_llava_path", "qwen2-vl": "tiny_qwen2vl_path"}


def _model(request: pytest.FixtureRequest, arch: str) -> Path:
    return Path(request.getfixturevalue(ARCHES[arch]))


def _rows(batch: dict[str, torch.Tensor], key: str) -> list[list[int]]:
    """Each sequence of `batch[key]` without its padding."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return [row[:n] for row, n in zip(batch[key].tolist(), lengths, strict=True)]


@pytest.mark.parametrize("arch", list(ARCHES))
def test_collator_builds_the_batches_of_trl(arch, request, pair_data, train_cache, tmp_path):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    recipe = tiny_recipe(_model(request, arch), pair_data, tmp_path / "run", train_cache)
    processor = load_processor(recipe.model)
    prepared = tokenize_pairs(recipe, processor)
    rows = [prepared.dataset[i] for i in (0, 1, 6)]  # index 6: the multi-turn prompt
    ours = PreferenceCollator(processor, processor.tokenizer.pad_token_id)(rows)
    messages = [
        {key: row[key] for key in ("images", "prompt", "chosen", "rejected")} for row in rows
    ]
    theirs = DataCollatorForVisionPreference(processor)(messages)

    assert _rows(ours, "input_ids") == _rows(theirs, "input_ids")
    assert _rows(ours, "completion_mask") == _rows(theirs, "completion_mask")
    image_keys = {"pixel_values", "image_grid_thw", "mm_token_type_ids"} & set(theirs)
    assert "pixel_values" in image_keys
    for key in image_keys:
        if key == "mm_token_type_ids":
            assert _rows(ours, key) == _rows(theirs, key)
        else:
            torch.testing.assert_close(ours[key], theirs[key])


def test_long_responses_are_cut_never_the_image_tokens(tiny_llava_path, pair_data, tmp_path):
    rows = [dict(row) for row in pair_data.rows[:2]]
    rows[0]["chosen"] = " ".join(["A red cup on the table."] * 40)
    pairs = write_pairs(tmp_path / "long.jsonl", rows)
    data = PairData(pairs, pair_data.image_root, rows)
    recipe = tiny_recipe(
        tiny_llava_path,
        data,
        tmp_path / "run",
        None,
        "data.max_length=48",
        "data.min_response_tokens=4",
    )
    processor = load_processor(recipe.model)
    prepared = tokenize_pairs(recipe, processor)
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    long_row = prepared.dataset[0]
    assert prepared.counts["truncated"] == 1 and prepared.counts["kept"] == 1
    assert len(long_row["prompt_ids"]) + len(long_row["chosen_ids"]) == 48
    # The whole image is still there: 16 image tokens (32 px in 8 px patches).
    assert long_row["prompt_ids"].count(image_token) == 16
    batch = PreferenceCollator(processor, processor.tokenizer.pad_token_id)([long_row])
    assert batch["input_ids"].shape[1] == 48


def test_prompts_too_long_are_dropped_and_counted(tiny_llava_path, pair_data, tmp_path):
    rows = [dict(row) for row in pair_data.rows[:3]]
    rows[1]["prompt"] = [{"role": "user", "content": " ".join(["Describe the cup."] * 30)}]
    data = PairData(write_pairs(tmp_path / "p.jsonl", rows), pair_data.image_root, rows)
    recipe = tiny_recipe(tiny_llava_path, data, tmp_path / "run", None, "data.max_length=60")
    prepared = tokenize_pairs(recipe, load_processor(recipe.model))
    assert len(prepared.dataset) == 2
    assert prepared.counts["dropped"] == {"prompt-too-long": 1}
    assert "dropped 1 (prompt-too-long)" in prepared.summary()

    recipe = tiny_recipe(tiny_llava_path, data, tmp_path / "run2", None, "data.max_length=20")
    with pytest.raises(ConfigError, match="no pair left to train on"):
        tokenize_pairs(recipe, load_processor(recipe.model))


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a model is loaded: bad input must be refused before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("bpo.train.model.load_model", refuse)


def test_missing_image_stops_before_the_model_loads(
    tiny_llava_path, pair_data, tmp_path, no_model_load, capsys
):
    from bpo.train.runner import train

    rows = [dict(row) for row in pair_data.rows[:2]]
    rows[1]["image"] = "gone.jpg"
    data = PairData(write_pairs(tmp_path / "p.jsonl", rows), pair_data.image_root, rows)
    with pytest.raises(ImageError) as caught:
        train(tiny_recipe(tiny_llava_path, data, tmp_path / "run", None))
    assert rows[1]["id"] in str(caught.value) and "gone.jpg" in str(caught.value)

    # Skipped on request: counted, and the run goes on to the model (refused here). The
    # count is said at once; skipped.json is written with the run's other outputs, which
    # a run that fails before training leaves unwritten.
    recipe = tiny_recipe(tiny_llava_path, data, tmp_path / "run2", None, "data.on_error=skip")
    with pytest.raises(AssertionError, match="a model was loaded"):
        train(recipe)
    assert "skipped 1 (missing-image)" in capsys.readouterr().err
    assert not (tmp_path / "run2" / "skipped.json").exists()


def test_empty_pairs_stop_before_the_model_loads(
    tiny_llava_path, pair_data, tmp_path, no_model_load
):
    from bpo.train.runner import train

    empty = PairData(write_pairs(tmp_path / "empty.jsonl", []), pair_data.image_root, [])
    with pytest.raises(ConfigError, match=r"empty\.jsonl"):
        train(tiny_recipe(tiny_llava_path, empty, tmp_path / "run", None))
    missing = PairData(tmp_path / "nowhere.jsonl", pair_data.image_root, [])
    with pytest.raises(ConfigError, match="does not exist"):
        train(tiny_recipe(tiny_llava_path, missing, tmp_path / "run", None))


def test_tokenized_pairs_are_cached_and_a_trl_export_reads_the_same(
    tiny_llava_path, pair_data, tmp_path, monkeypatch
):
    from bpo.exports import export_trl

    recipe = tiny_recipe(tiny_llava_path, pair_data, tmp_path / "run", tmp_path / "cache")
    processor = load_processor(recipe.model)
    first = tokenize_pairs(recipe, processor)

    def refuse(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("bpo.exports.export_trl", refuse)
    monkeypatch.setattr(train_data, "tokenize_example", refuse)
    again = tokenize_pairs(recipe, processor)
    assert again.path == first.path and len(again.dataset) == len(first.dataset)
    monkeypatch.undo()

    export_trl(pair_data.pairs, tmp_path / "export", image_root=pair_data.image_root)
    recipe.data.pairs = str(tmp_path / "export" / "pairs_trl")
    from_export = tokenize_pairs(recipe, processor)
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert from_export.dataset[column] == first.dataset[column]
