"""Benchmark: `bpo report` over a run of N pairs stays small on disk and bounded in memory.

For each N, a run directory is generated: N/3 samples over a pool of real photos
(skimage, 512 px), N negatives and N pairs in three strategies (image-weakening
ones carry a diffusion provenance, so their weakened image is made again), the
pairs' stats file, 2000 training log lines and two CHAIR results with 500
captions each. A fresh Python process then writes the report with
`bpo.report.write_report`; its peak RSS (``ru_maxrss``) is the report's alone.

Usage::

    .venv/bin/python bench/report.py                  # N = 10k and 100k
    .venv/bin/python bench/report.py --sizes 1000 20000

Prints a table and writes ``bench/results/report.json``. Exit status 1 if the
page at any N is 20 MB or more, or if peak RSS at the largest N exceeds 1.2x
the smallest (memory must not grow with the run).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "report.json"
MAX_PAGE_BYTES = 20_000_000
ALLOWED_GROWTH = 1.2
STRATEGIES = ("image-weakening", "llm-injection", "cooccurrence")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")

_WORDS = (  # noqa: SIM905 (one string reads better than a long list)
    "a the cat dog person table chair cup fork knife plate car street tree sky red blue "
    "green white black small large left right next to on under near holding sitting "
    "standing wooden metal two three several background foreground image shows"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def generate(run: Path, count: int) -> None:
    """Write a run directory with `count` pairs (see the module docstring)."""
    from PIL import Image
    from skimage import data

    from bpo.distort import describe
    from bpo.pairs import PairStats, stats_path

    rng = random.Random(count)
    images = run / "data" / "images"
    images.mkdir(parents=True)
    for name in PHOTOS:
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((512, 512)).save(
            images / f"{name}.jpg", quality=90
        )
    stats = PairStats()
    samples_count = -(-count // len(STRATEGIES))
    (run / "negatives").mkdir()
    with (
        open(run / "data" / "samples.jsonl", "w", encoding="utf-8") as samples,
        open(run / "negatives" / "all.jsonl", "w", encoding="utf-8") as negatives,
        open(run / "pairs.jsonl", "w", encoding="utf-8") as pairs,
    ):
        written = 0
        for i in range(samples_count):
            sample_id = f"s{i}"
            prompt = [{"role": "user", "content": _text(rng, 12)}]
            answer = _text(rng, rng.randint(60, 140))
            image = f"{PHOTOS[i % len(PHOTOS)]}.jpg"
            sample = {"id": sample_id, "image": image, "prompt": prompt, "response": answer}
            samples.write(json.dumps(sample) + "\n")
            for strategy in STRATEGIES:
                if written == count:
                    break
                written += 1
                negative_id = f"{sample_id}/{strategy}/0"
                rejected = _text(rng, rng.randint(60, 140))
                params: dict[str, object] = {"model": "bench"}
                if strategy == "image-weakening":
                    params["distortion"] = describe("diffusion", {"step": 500}, seed=i)
                negative = {
                    "id": negative_id,
                    "sample_id": sample_id,
                    "strategy": strategy,
                    "text": rejected,
                    "params": params,
                }
                negatives.write(json.dumps(negative) + "\n")
                stats.negatives[strategy] += 1
                pair = {
                    "id": negative_id,
                    "image": image,
                    "prompt": prompt,
                    "chosen": answer,
                    "rejected": rejected,
                    "strategy": strategy,
                }
                pairs.write(json.dumps(pair) + "\n")
                stats.kept[strategy] += 1
    stats_path(run / "pairs.jsonl").write_text(json.dumps(stats.to_dict()), encoding="utf-8")
    (run / "train").mkdir()
    with open(run / "train" / "metrics.jsonl", "w", encoding="utf-8") as metrics:
        for step in range(1, 2001):
            line = {
                "step": step,
                "loss": 0.69 * 0.999**step + rng.random() * 0.05,
                "rewards/margins": step / 1000 + rng.random() * 0.1,
                "rewards/accuracies": min(1.0, 0.5 + step / 4000 + rng.random() * 0.1),
            }
            metrics.write(json.dumps(line) + "\n")
    for name, rate in (("base", 0.5), ("bpo", 0.3)):
        folder = run / "eval" / name
        folder.mkdir(parents=True)
        captions, answers = [], []
        for k in range(500):
            wrong = [["fork", "fork"]] if rng.random() < rate else []
            captions.append({"id": f"c{k}", "hallucinated": wrong, "objects": ["cup"]})
            answers.append({"id": f"c{k}", "answer": _text(rng, 30) + " A fork.", "image": "x.jpg"})
        hallucinated = sum(bool(c["hallucinated"]) for c in captions)
        results = {
            "bench": "chair",
            "created": f"2024-01-0{1 if name == 'base' else 2}T00:00:00+00:00",
            "settings": {"bench": "chair"},
            "counts": {"items": 500, "answered": 500},
            "metrics": {"chair_s": hallucinated / 500, "chair_i": hallucinated / 1500},
            "details": {"captions": captions},
        }
        (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
        (folder / "predictions.jsonl").write_text(
            "".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8"
        )


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def child(run: str, out: str) -> None:
    """Write the report of `run` to `out`; print seconds and peak RSS as JSON."""
    from bpo.report import write_report

    start = time.perf_counter()
    write_report(run, out)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mib": _peak_rss_mib()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--child", nargs=2, metavar=("RUN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="bpo-bench-report-") as tmp:
        for count in args.sizes:
            run, out = Path(tmp) / f"run-{count}", Path(tmp) / f"report-{count}.html"
            generate(run, count)
            pairs_mib = (run / "pairs.jsonl").stat().st_size / 2**20
            command = [sys.executable, __file__, "--child", str(run), str(out)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            page = out.read_text(encoding="utf-8")
            rows.append(
                {
                    "n": count,
                    "pairs_mib": pairs_mib,
                    "page_bytes": out.stat().st_size,
                    "cards": page.count('<article class="pair" '),
                    "images": page.count("<img "),
                    **result,
                }
            )

    print(
        f"{'N pairs':>8} {'pairs MiB':>9} {'seconds':>8} {'peak RSS MiB':>12} "
        f"{'page MB':>8} {'cards':>6} {'images':>6}"
    )
    for row in rows:
        print(
            f"{row['n']:>8} {row['pairs_mib']:>9.1f} {row['seconds']:>8.1f} "
            f"{row['peak_rss_mib']:>12.1f} {row['page_bytes'] / 1e6:>8.2f} "
            f"{row['cards']:>6} {row['images']:>6}"
        )
    peak = {row["n"]: row["peak_rss_mib"] for row in rows}
    growth = peak[max(peak)] / peak[min(peak)]
    print(f"peak RSS {max(peak)} / {min(peak)}: {growth:.2f}x (allowed {ALLOWED_GROWTH}x)")
    small_ok = all(row["page_bytes"] < MAX_PAGE_BYTES for row in rows)
    bounded_ok = growth <= ALLOWED_GROWTH

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "report",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
        "rss_growth": growth,
        "allowed_growth": ALLOWED_GROWTH,
        "max_page_bytes": MAX_PAGE_BYTES,
        "ok": small_ok and bounded_ok,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0 if small_ok and bounded_ok else 1


if __name__ == "__main__":
    sys.exit(main())
