"""`bpo demo --ablate`: every variant trained and scored; the summary and its table."""

from __future__ import annotations

import json
import math

import pytest

from bpo.cli import main
from bpo.toy.ablation import VARIANTS, ablation_table, best_bpo, summarize
from bpo.train.callbacks import read_metrics


def _run(variant: str, base_seed: int, preference_seed: int, absent: float, grounding: float):
    return {
        "variant": variant,
        "base_seed": base_seed,
        "preference_seed": preference_seed,
        "cf_absent_partner_rate": absent,
        "chair_i": absent / 2,
        "chair_s": absent,
        "cf_recall": 0.9,
        "normal_dependent_recall": 0.8,
        "pope_accuracy": 0.5,
        "validation_grounding": grounding,
    }


def test_summary_pools_every_run_and_keeps_per_base_seed_means():
    runs = [
        _run("bpo-noise", 0, 0, 0.1, 0.7),
        _run("bpo-noise", 0, 1, 0.3, 0.7),
        _run("bpo-noise", 1, 0, 0.5, 0.7),
        _run("bpo-both", 0, 0, 0.0, 0.9),
        _run("bpo-both", 1, 0, 0.9, 0.6),
    ]
    summary = summarize(runs)
    noise = summary["bpo-noise"]["cf_absent_partner_rate"]
    assert noise["mean"] == pytest.approx(0.3)
    assert noise["std"] == pytest.approx(0.2)  # sample standard deviation of .1, .3, .5
    assert noise["per_base_seed"] == pytest.approx({"0": 0.2, "1": 0.5})
    # Chosen on the validation grounding score, not on the test measures.
    assert best_bpo(summary) == "bpo-both"
    table = ablation_table({"summary": summary, "best_bpo": "bpo-both"})
    assert "| bpo-both (best BPO) | 2 | 0.450 ± 0.636 |" in table


def test_a_single_run_has_no_spread():
    summary = summarize([_run("base", 0, 0, 0.6, 0.3)])
    assert summary["base"]["chair_i"] == {"mean": 0.3, "std": 0.0, "per_base_seed": {"0": 0.3}}
    assert best_bpo(summary) is None


def test_fast_ablation_trains_and_scores_every_variant(tmp_path, capsys):
    out = tmp_path / "ablate"
    argv = ["demo", "--ablate", "--fast", "--out", str(out), "--no-progress"]
    assert main([*argv, "--base-seeds", "0", "--preference-seeds", "0"]) == 0
    table = capsys.readouterr().out
    result = json.loads((out / "ablation.json").read_text())
    assert [run["variant"] for run in result["runs"]] == [
        "base",
        "bpo-both",
        "bpo-noise",
        "bpo-inject",
        "bpo-hardest",
        "bpo-mdpo",
        "bpo-mdpo-hardest",
        "sft-matched",
        "sft-all",
        "bpo-rounds2",
        "bpo-rounds3",
        "bpo-combined",
    ]
    assert set(result["summary"]) == set(VARIANTS)
    for run in result["runs"]:
        assert all(not math.isnan(run[key]) for key in ("chair_i", "pope_accuracy")), run
        assert f"| {run['variant']}" in table
    cell = out / "base0" / "seed0"
    # Each BPO variant trained on its own strategies' pairs only.
    for variant, strategies in (
        ("bpo-noise", {"image-weakening"}),
        ("bpo-inject", {"cooccurrence"}),
        ("bpo-both", {"image-weakening", "cooccurrence"}),
    ):
        pairs = (cell / variant / "pairs.jsonl").read_text().splitlines()
        assert {json.loads(line)["strategy"] for line in pairs} == strategies, variant
    # Matched SFT trains on bpo-both's very pairs; SFT-all on every preference scene's gold.
    for name in ("sft-matched", "bpo-hardest", "bpo-mdpo", "bpo-mdpo-hardest"):
        pairs = (cell / name / "pairs.jsonl").read_bytes()
        assert pairs == (cell / "bpo-both" / "pairs.jsonl").read_bytes(), name
    assert (cell / "bpo-hardest" / "train" / "reference_margins.json").exists()
    mdpo = read_metrics(cell / "bpo-mdpo" / "train" / "metrics.jsonl")
    assert all("image_conditional/loss" in row for row in mdpo if "loss" in row)
    scenes = (out / "data" / "preference.jsonl").read_text().splitlines()
    gold = (cell / "sft-all" / "pairs.jsonl").read_text().splitlines()
    assert len(gold) == len(scenes)
    for name in ("sft-matched", "sft-all"):
        config = (cell / name / "config.yaml").read_text()
        assert "loss_type:\n  - sft" in config or "loss_type: [sft]" in config, name
        assert (cell / name / "eval" / "bpo-validation" / "toy.json").exists()
    # Rounds: a row is its round's model; round 2 bootstrapped from round 1's, and round 1
    # is the one-round run of the same recipe (copied, not trained again).
    rows = {run["variant"]: run for run in result["runs"]}
    assert rows["bpo-rounds2"]["run"] == str(cell / "bpo-rounds" / "round-2")
    assert rows["bpo-rounds3"]["run"] == str(cell / "bpo-rounds" / "round-3")
    assert rows["bpo-combined"]["run"] == str(cell / "bpo-combined" / "round-2")
    for folder, origin in (("bpo-rounds", "bpo-both"), ("bpo-combined", "bpo-mdpo-hardest")):
        first = json.loads(
            (cell / folder / "round-2" / "negatives" / "image-weakening.jsonl")
            .read_text()
            .splitlines()[0]
        )
        assert first["params"]["model"] == str((cell / folder / "round-1" / "model").resolve())
        for name in ("model/model.safetensors", "train/metrics.jsonl"):
            copied = (cell / folder / "round-1" / name).read_bytes()
            assert copied == (cell / origin / name).read_bytes(), (folder, name)
    combined = read_metrics(cell / "bpo-combined" / "round-2" / "train" / "metrics.jsonl")
    assert all("image_conditional/loss" in row for row in combined if "loss" in row)
    assert (cell / "bpo-combined" / "round-2" / "train" / "reference_margins.json").exists()
    # A rerun resumes: nothing is trained again and the table is the same.
    before = (out / "ablation.md").read_text()
    assert main([*argv, "--base-seeds", "0", "--preference-seeds", "0"]) == 0
    assert "starting from scratch" not in capsys.readouterr().err
    assert (out / "ablation.md").read_text() == before


def test_a_subset_of_variants_always_runs_bpo_both_and_unknown_names_are_refused():
    from bpo.errors import ConfigError
    from bpo.toy.ablation import _chosen_variants

    assert _chosen_variants(["bpo-mdpo"]) == {"bpo-mdpo", "bpo-both"}
    assert _chosen_variants(None) == set(VARIANTS) - {"base"}
    with pytest.raises(
        ConfigError, match=r"unknown ablation variant\(s\) bpo-magic; valid: sft-all"
    ):
        _chosen_variants(["bpo-magic"])
