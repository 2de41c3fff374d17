"""The bootstrap runner: resume, shard + merge, errors, image conditioning.

kill -9 mid-run and resume: `tests/crash/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo.bootstrap.merge import merge_outputs
from bpo.bootstrap.runner import Shard, log_path, run_bootstrap
from bpo.cli import main
from bpo.data.jsonl import iter_jsonl
from bpo.errors import ConfigError, ErrorPolicy, RecordError


def records(path: Path) -> dict[str, dict]:
    """id -> record; fails on an id written twice."""
    seen: dict[str, dict] = {}
    for _, value in iter_jsonl(path):
        assert value["id"] not in seen, f"id {value['id']} written twice"
        seen[value["id"]] = value
    return seen


def cooccurrence(samples: Path, out: Path, *extra: str) -> int:
    return main(
        [
            *("bootstrap", str(samples), "--strategy", "cooccurrence", "--out", str(out)),
            *("--num-negatives", "2", "--no-progress", *extra),
        ]
    )


def test_shard_parse():
    assert Shard.parse("1/4") == Shard(1, 4)
    assert 5 in Shard(1, 4) and 6 not in Shard(1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError):
            Shard.parse(bad)


def test_rerun_resumes_without_duplicates(dataset, tmp_path):
    out = tmp_path / "negatives.jsonl"
    assert cooccurrence(dataset, out) == 0
    first = records(out)
    assert first, "cooccurrence wrote nothing"
    assert cooccurrence(dataset, out) == 0
    assert records(out) == first
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["samples_resumed"] == 12 and summary["samples_done"] == 0


def test_shards_merge_to_the_unsharded_run(dataset, tmp_path):
    whole = tmp_path / "whole.jsonl"
    assert cooccurrence(dataset, whole) == 0
    parts = [tmp_path / f"part{i}.jsonl" for i in range(3)]
    for i, part in enumerate(parts):
        assert cooccurrence(dataset, part, "--shard", f"{i}/3") == 0
    shard_ids = [set(records(part)) for part in parts]
    assert not set.intersection(*shard_ids)
    merged = tmp_path / "merged.jsonl"
    assert main(["merge", *map(str, parts), "--out", str(merged)]) == 0
    assert records(merged) == records(whole)
    # The merged log lets a re-run on the merged output resume every sample.
    assert cooccurrence(dataset, merged) == 0
    assert records(merged) == records(whole)
    assert merge_outputs(parts, merged) == (0, len(records(whole)))


def test_missing_images_are_counted_with_skip_and_raise_by_default(dataset, tmp_path):
    from bpo.bootstrap.image_weakening import ImageWeakening

    class EchoBackend:
        name, model_name = "echo", "echo"

        def generate(self, requests, *, progress=False):
            return [f"size {r.image.size}" for r in requests]

        def close(self):
            pass

    for name in ("001.png", "004.png"):
        (dataset.parent / "images" / name).unlink()
    out = tmp_path / "neg.jsonl"
    strategy = ImageWeakening(EchoBackend())
    with pytest.raises(RecordError, match=r"001\.png"):
        run_bootstrap(dataset, strategy, out, image_root=dataset.parent / "images", progress=False)
    policy = ErrorPolicy(on_error="skip")
    summary = run_bootstrap(
        dataset,
        ImageWeakening(EchoBackend()),
        out,
        image_root=dataset.parent / "images",
        policy=policy,
        progress=False,
    )
    assert policy.total == 2
    assert summary.negatives_written == 10
    skipped = json.loads(Path(f"{out}.skipped.json").read_text())
    assert {entry["record_id"] for entry in skipped["skipped"]} == {"s001", "s004"}
    errors = [e for _, e in iter_jsonl(log_path(out)) if e["status"] == "error"]
    assert {e["sample_id"] for e in errors} == {"s001", "s004"}


def test_image_weakening_conditions_on_the_weakened_image(tiny_llava_path, dataset):
    """The weakened image reaches the model: its log-prob of the gold answer changes."""
    from PIL import Image

    from bpo.backends import GenerationRequest, get_backend
    from bpo.distort import distort

    backend = get_backend("hf", model=str(tiny_llava_path))
    image = Image.open(dataset.parent / "images" / "000.png").convert("RGB")
    weakened = distort(image, "diffusion", step=900, seed=0)
    messages = [{"role": "user", "content": "Describe the image briefly."}]
    requests = [GenerationRequest(messages=messages, image=im, seed=0) for im in (image, weakened)]
    clean, noisy = backend.score(requests, ["A cat sleeps on the couch."] * 2)
    assert clean != pytest.approx(noisy, abs=1e-6)


def test_image_weakening_through_hf_writes_negatives_with_provenance(tiny_llava_path, dataset):
    out = dataset.parent / "negatives.jsonl"
    argv = ["bootstrap", str(dataset), "--strategy", "image-weakening", "--model"]
    argv += [str(tiny_llava_path), "--image-root", str(dataset.parent / "images")]
    argv += ["--out", str(out), "--max-new-tokens", "8", "--step", "700", "--no-progress"]
    assert main(argv) == 0
    negatives = records(out)
    assert len(negatives) == 12
    first = negatives["s000/image-weakening/0"]
    assert first["params"]["distortion"]["kind"] == "diffusion"
    assert first["params"]["distortion"]["params"]["step"] == 700
    assert first["params"]["model"] == str(tiny_llava_path)
