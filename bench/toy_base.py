"""Benchmark and premise check of the toy world's biased base model.

Writes the toy world, builds the base model from scratch (`bpo.toy.build_base_model`),
captions the test scenes greedily with the HF backend and reports, per stage, wall
and CPU seconds, and the toy metrics the demo's claim rests on: the rate at which
counterfactual captions name the absent partner, counterfactual recall, normal
dependent recall and the rate of visual confusions.

Usage::

    .venv/bin/python bench/toy_base.py                          # seed 0, default sizes
    .venv/bin/python bench/toy_base.py --seed 1 --split validation
    .venv/bin/python bench/toy_base.py --write-checkpoint       # (re)write the shipped base
    .venv/bin/python bench/toy_base.py --check-checkpoint       # rebuilt == shipped, bytewise?

Prints a JSON summary and writes ``bench/results/toy_base[-seed<N>].json``. On a
shared machine compare CPU seconds, not wall seconds. ``--write-checkpoint`` and
``--check-checkpoint`` need world seed 0, base seed 0 and the default settings,
which is what `bpo.toy.base_model.shipped_checkpoint` promises.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def caption_test_split(model_dir: Path, world_dir: Path, split: str) -> dict[str, object]:
    """Greedy captions of a split's scenes, scored with the toy metrics."""
    from bpo.backends.base import GenerationRequest
    from bpo.backends.hf import HFBackend
    from bpo.data.images import load_image
    from bpo.toy import ToyWorld, caption_metrics, grounding_score

    world = ToyWorld.load(world_dir)
    samples = list(world.samples(split, task="caption"))
    backend = HFBackend(model_dir, batch_size=100)
    requests = [
        GenerationRequest(
            messages=sample.prompt,
            image=load_image(sample.image or "", world.root, record_id=sample.id),
            max_new_tokens=32,
            temperature=0,
        )
        for sample in samples
    ]
    start = time.perf_counter()
    texts = backend.generate(requests, progress=True)
    seconds = time.perf_counter() - start
    predictions = {sample.id: text for sample, text in zip(samples, texts, strict=True)}
    metrics = caption_metrics(samples, predictions, spec=world.spec)
    metrics["grounding_score"] = grounding_score(metrics)
    metrics["generation_seconds"] = round(seconds, 1)
    metrics["examples"] = [
        {"gold": sample.response, "generated": predictions[sample.id]}
        for sample in samples[-6:]  # counterfactual scenes come last
    ]
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="base-model seed")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--split", default="test", choices=("test", "validation"))
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="NAME=VALUE", help="base-model settings"
    )
    parser.add_argument("--write-checkpoint", action="store_true")
    parser.add_argument("--check-checkpoint", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from bpo.toy import build_base_model, write_world
    from bpo.toy.base_model import SHIPPED_DIR, SHIPPED_SEED, SHIPPED_WORLD_SEED

    settings = {name: json.loads(value) for name, value in (s.split("=", 1) for s in args.set)}
    shipped = (args.seed, args.world_seed, settings) == (SHIPPED_SEED, SHIPPED_WORLD_SEED, {})
    if (args.write_checkpoint or args.check_checkpoint) and not shipped:
        parser.error("--write/--check-checkpoint need the shipped seeds and default settings")

    work = Path(args.out or tempfile.mkdtemp(prefix="bpo-toy-bench-"))
    start = time.perf_counter()
    world_dir = write_world(work / "world", seed=args.world_seed)
    world_seconds = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    model_dir = build_base_model(world_dir, work / "base", seed=args.seed, **settings)
    build = {
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        **json.loads((model_dir / "toy_base.json").read_text()),
    }
    metrics = caption_test_split(model_dir, world_dir, args.split)
    weights = model_dir / "model.safetensors"
    summary = {
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads()},
        "world_seconds": round(world_seconds, 1),
        "build": build,
        "checkpoint_bytes": sum(f.stat().st_size for f in model_dir.iterdir()),
        "split": args.split,
        "metrics": metrics,
    }
    if args.check_checkpoint:
        same = weights.read_bytes() == (SHIPPED_DIR / "model.safetensors").read_bytes()
        summary["matches_shipped_checkpoint"] = same
    if args.write_checkpoint:
        if SHIPPED_DIR.exists():
            shutil.rmtree(SHIPPED_DIR)
        shutil.copytree(model_dir, SHIPPED_DIR)
    RESULTS.mkdir(exist_ok=True)
    name = "toy_base.json" if args.seed == 0 else f"toy_base-seed{args.seed}.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 1 if summary.get("matches_shipped_checkpoint") is False else 0


if __name__ == "__main__":
    sys.exit(main())
