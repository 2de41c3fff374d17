"""`bpo demo --fast`: the toy pipeline end to end at tiny sizes, every artifact checked."""

from __future__ import annotations

import json

from bpo.cli import main


def test_fast_demo_writes_every_artifact(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "CF absent-partner rate" in table and "CHAIR_i" in table
    for path in (
        "world/world.json",
        "base/toy_base.json",
        "base/model.safetensors",
        "data/preference.jsonl",
        "negatives/image-weakening.jsonl",
        "negatives/cooccurrence.jsonl",
        "pairs.jsonl",
        "pairs.stats.json",
        "train/metrics.jsonl",
        "model/config.json",
        "report.html",
    ):
        assert (out / path).exists(), path
    for label in ("base", "bpo"):
        for bench in ("chair", "pope", "toy"):
            results = json.loads((out / "eval" / f"{label}-{bench}" / "results.json").read_text())
            assert results["bench"] == bench and results["metrics"], (label, bench)
    # Negatives carry their provenance; every pair names an object its gold answer lacks.
    weakened = json.loads((out / "negatives/image-weakening.jsonl").open().readline())
    assert weakened["params"]["distortion"]["kind"] == "diffusion"
    stats = json.loads((out / "pairs.stats.json").read_text())
    assert stats["options"]["require_absent_object"] is True
