"""``train.select: hardest``: the selection on hand-made log-probs, then in a tiny training run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bpo.config import load_recipe
from bpo.errors import ConfigError
from bpo.train.selection import distribution, hardest_rows, sample_keys, select_hardest
from tests.train.conftest import RECIPES, tiny_recipe

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

# Sample a: three pairs, two tied at -0.5 (a/1 < a/3 wins); b: one pair; c: two tied.
SAMPLES = ["a", "a", "a", "b", "c", "c"]
IDS = ["a/2", "a/1", "a/3", "b/1", "c/2", "c/1"]
REJECTED = [-1.0, -0.5, -0.5, -3.0, -2.0, -2.0]


def test_hardest_rows_keeps_the_most_likely_rejected_per_sample_ties_by_pair_id():
    assert hardest_rows(SAMPLES, IDS, REJECTED, 1) == [1, 3, 5]
    assert hardest_rows(SAMPLES, IDS, REJECTED, 2) == [1, 2, 3, 4, 5]
    # k above a sample's pairs keeps all of them.
    assert hardest_rows(SAMPLES, IDS, REJECTED, 3) == [0, 1, 2, 3, 4, 5]
    assert hardest_rows(SAMPLES, IDS, REJECTED, 10) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="at least 1"):
        hardest_rows(SAMPLES, IDS, REJECTED, 0)


def test_hardest_rows_does_not_depend_on_the_row_order():
    order = [5, 2, 0, 4, 3, 1]
    kept = hardest_rows(
        [SAMPLES[i] for i in order], [IDS[i] for i in order], [REJECTED[i] for i in order], 1
    )
    assert sorted(IDS[order[row]] for row in kept) == ["a/1", "b/1", "c/1"]


def test_distribution_quantiles_by_hand():
    summary = distribution([4.0, 0.0, 2.0, 1.0, 3.0])
    assert summary["count"] == 5 and summary["mean"] == 2.0
    quantiles = summary["quantiles"]
    assert quantiles["0"] == 0.0 and quantiles["1"] == 4.0 and quantiles["0.5"] == 2.0
    assert quantiles["0.1"] == pytest.approx(0.4) and quantiles["0.25"] == 1.0
    assert distribution([])["count"] == 0


def test_select_hardest_groups_by_prompt_and_image_and_divides_by_the_tokens():
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "prompt_ids": datasets.List(datasets.Value("int64")),
            "chosen_ids": datasets.List(datasets.Value("int64")),
            "rejected_ids": datasets.List(datasets.Value("int64")),
            "ref_chosen_logps": datasets.Value("float64"),
            "ref_rejected_logps": datasets.Value("float64"),
        }
    )
    cat, dog = [{"bytes": b"cat", "path": None}], [{"bytes": b"dog", "path": None}]
    rows = {
        # Same prompt and image: one sample. Per token -1.0 (4 tokens) beats -3.0 (1 token),
        # though its sum (-4) is the lower.
        "cat/0": (cat, [1, 2], [5, 5], [7, 7, 7, 7], -2.0, -4.0),
        "cat/1": (cat, [1, 2], [5, 5], [7], -2.0, -3.0),
        # Another image under the same prompt: another sample.
        "dog/0": (dog, [1, 2], [5, 5], [7, 7], -1.0, -8.0),
        # Another prompt on the cat image: another sample.
        "cat-q/0": (cat, [1, 3], [5], [7, 7], -1.0, -1.0),
    }
    dataset = datasets.Dataset.from_dict(
        {
            "id": list(rows),
            **{
                name: [values[column] for values in rows.values()]
                for column, name in enumerate(list(features)[1:])
            },
        },
        features=features,
    )
    selection = select_hardest(dataset, 1)
    assert sample_keys(dataset, batch_size=3) == sample_keys(dataset)  # across batches
    assert [selection.pair_ids[row] for row in selection.rows] == ["cat/0", "dog/0", "cat-q/0"]
    assert selection.total == 4
    # Margin = chosen per token - rejected per token: cat/0 -1 - (-1) = 0, cat/1 -1 - (-3) = 2,
    # dog/0 -0.5 - (-4) = 3.5, cat-q/0 -1 - (-0.5); the kept ones average (0 + 3.5 - 0.5) / 3.
    assert selection.margins == [0.0, 2.0, 3.5, -0.5]
    record = selection.margins_record()
    assert record["pairs"] == 4 and record["kept"] == 3
    assert record["margins"]["all"]["count"] == 4 and record["margins"]["kept"]["mean"] == 1.0
    assert record["kept_ids"] == ["cat/0", "dog/0", "cat-q/0"]


def test_recipe_checks_select_k_and_needs_the_reference_pass():
    with pytest.raises(ConfigError, match=r"train\.select_k must be positive, got 0"):
        load_recipe(RECIPES / "tiny.yaml", ["train.select=hardest", "train.select_k=0"])
    with pytest.raises(ConfigError, match=r"train\.precompute_reference: true"):
        load_recipe(
            RECIPES / "tiny.yaml", ["train.select=hardest", "train.precompute_reference=false"]
        )
    with pytest.raises(ConfigError, match="is not one of all, hardest"):
        load_recipe(RECIPES / "tiny.yaml", ["train.select=easiest"])


def _expected_kept(pair_rows, dataset_by_id, reference) -> list[str]:
    """By hand: per (image, prompt), the pair whose rejected has the highest logp per token."""
    groups: dict[str, list[str]] = {}
    for row in pair_rows:
        groups.setdefault(row["image"] + json.dumps(row["prompt"]), []).append(row["id"])
    kept = []
    for ids in groups.values():
        per_token = {i: reference[i] / len(dataset_by_id[i]["rejected_ids"]) for i in ids}
        kept.append(max(sorted(ids), key=lambda i: per_token[i]))
    return kept


HARDEST = ("train.select=hardest", "train.select_k=1", "train.max_steps=-1")


@pytest.fixture(scope="module")
def hardest_run(tiny_llava_path, pair_data, train_cache, tmp_path_factory):
    """recipes/tiny.yaml for one epoch of the hardest pair of each sample."""
    from bpo.train.runner import train

    out = tmp_path_factory.mktemp("hardest-run")
    return train(tiny_recipe(tiny_llava_path, pair_data, out, train_cache, *HARDEST))


def test_hardest_k1_trains_on_the_hardest_pair_of_each_sample(hardest_run, pair_data):
    result = hardest_run
    recipe = load_recipe(result.run_dir / "config.yaml")
    record = json.loads((result.run_dir / "reference_margins.json").read_text())
    # 8 pairs on 5 samples: 4 photos, the coffee photo under two prompts.
    assert record["pairs"] == 8 and record["kept"] == 5
    assert result.selection == {"select": "hardest", "select_k": 1, "pairs": 8, "kept": 5}
    saved = json.loads((result.run_dir / "train_result.json").read_text())
    assert saved["selection"]["kept"] == 5
    # One epoch of 5 pairs, 2 a step: 3 steps (8 pairs would take 4).
    assert result.global_step == 3
    assert "5 of 8 (hardest, k=1)" in result.summary()

    from bpo.train.data import tokenize_pairs
    from bpo.train.model import load_processor

    dataset = tokenize_pairs(recipe, load_processor(recipe.model)).dataset
    by_id = {row["id"]: row for row in dataset}
    store = Path(result.reference["folder"]) / "reference_logps.jsonl"
    stored = [json.loads(line) for line in store.read_text().splitlines()]
    rejected = {dataset[int(row["id"])]["id"]: row["ref_rejected_logps"] for row in stored}
    expected = _expected_kept(pair_data.rows, by_id, rejected)
    assert sorted(record["kept_ids"]) == sorted(expected)
    assert len(expected) == 5 and all(math.isfinite(v) for v in rejected.values())
    # Not simply the first pair of each sample in the file (the tiny model is seeded).
    assert any(i.endswith("/1") and not i.startswith("coffee") for i in expected)
    quantiles = record["margins"]["kept"]["quantiles"]
    assert record["margins"]["all"]["count"] == 8 and quantiles["0"] <= quantiles["1"]


def test_select_all_is_the_default_run(tiny_llava_path, pair_data, train_cache, tmp_path):
    from bpo.train.runner import train

    default = train(tiny_recipe(tiny_llava_path, pair_data, tmp_path / "a", train_cache))
    explicit = train(
        tiny_recipe(
            tiny_llava_path,
            pair_data,
            tmp_path / "b",
            train_cache,
            "train.select=all",
            "train.select_k=3",
        )
    )
    assert explicit.weights_digests == default.weights_digests
    assert explicit.global_step == default.global_step == 4
    for run in (default, explicit):
        assert run.selection is None and not (run.run_dir / "reference_margins.json").exists()
        assert "selection" not in json.loads((run.run_dir / "train_result.json").read_text())
        assert "pairs" not in run.summary()


def test_a_resumed_hardest_run_ends_with_the_uninterrupted_weights(
    hardest_run, tiny_llava_path, pair_data, train_cache, tmp_path
):
    from bpo.train.runner import train
    from tests.train.test_train import InterruptAfterLogging, Interrupted

    recipe = tiny_recipe(tiny_llava_path, pair_data, tmp_path / "run", train_cache, *HARDEST)
    with pytest.raises(Interrupted):
        train(recipe, callbacks=[InterruptAfterLogging(3)])  # checkpoint-2 saved, step 3 lost
    resumed = train(recipe, resume=True)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.global_step == 3 and resumed.selection == hardest_run.selection
    assert resumed.weights_digests == hardest_run.weights_digests


def test_two_processes_keep_the_same_pairs(hardest_run, tiny_llava_path, pair_data, tmp_path):
    """Under `accelerate launch` (2 CPU processes), each process selects on its own."""
    from tests.train.conftest import accelerate_launch

    done = accelerate_launch("ddp", tiny_llava_path, pair_data, tmp_path / "run", *HARDEST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("kept 5 of 8 pairs") == 1  # said by the main process
    result = json.loads((tmp_path / "run" / "train_result.json").read_text())
    # 5 pairs, 2 per process and step: one epoch is 2 steps, the same weights on both.
    assert result["global_step"] == 2 and result["ranks_agree"]
    record = json.loads((tmp_path / "run" / "reference_margins.json").read_text())
    kept = json.loads((hardest_run.run_dir / "reference_margins.json").read_text())["kept_ids"]
    assert record["kept_ids"] == kept
