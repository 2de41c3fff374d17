"""Benchmark: stream N records read -> write, and check that memory does not grow with N.

For each N and each input format (our JSONL samples, a LLaVA JSON array), a fresh
Python process reads the file with `bpo.data.formats.read_samples` and writes every
sample with `bpo.data.jsonl.JsonlWriter`; its peak RSS (``ru_maxrss``) is therefore
the peak for that N alone. A baseline row loads the same LLaVA array with
``json.load``, as most training code does, to show what streaming saves.

Usage::

    .venv/bin/python bench/data_stream.py                  # N = 10k and 100k
    .venv/bin/python bench/data_stream.py --sizes 1000 50000

Prints a table and writes ``bench/results/data_stream.json``. Peak RSS at the
largest N must stay within 1.2x of the smallest (exit status 1 otherwise).
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

RESULTS = Path(__file__).resolve().parent / "results" / "data_stream.json"
MODES = ("jsonl", "llava", "llava-json.load")
ALLOWED_GROWTH = 1.2

# A vocabulary and answer lengths in the range of LLaVA-Instruct detail answers
# (~100 words), so that a record weighs what real ones do (~0.7 KB).
_WORDS = (  # noqa: SIM905 (one string reads better than 41 list lines)
    "a the cat dog person table chair cup fork knife plate car street tree sky red blue "
    "green white black small large left right next to on under near holding sitting "
    "standing wooden metal two three several background foreground image shows"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def generate(folder: Path, count: int) -> dict[str, Path]:
    """Write `count` records as our JSONL samples and as a LLaVA JSON array, streaming."""
    rng = random.Random(count)
    jsonl, llava = folder / f"samples-{count}.jsonl", folder / f"llava-{count}.json"
    with open(jsonl, "w", encoding="utf-8") as lines, open(llava, "w", encoding="utf-8") as array:
        array.write("[\n")
        for i in range(count):
            image, question = f"coco/train2017/{i:012d}.jpg", _text(rng, 12)
            answer = _text(rng, rng.randint(60, 140))
            sample = {
                "id": f"s{i}",
                "image": image,
                "prompt": [{"role": "user", "content": question}],
                "response": answer,
                "meta": {},
            }
            lines.write(json.dumps(sample) + "\n")
            record = {
                "id": f"s{i}",
                "image": image,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
            }
            array.write(("" if i == 0 else ",\n") + json.dumps(record, indent=2))
        array.write("\n]\n")
    return {"jsonl": jsonl, "llava": llava, "llava-json.load": llava}


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def child(source: str, target: str, mode: str) -> None:
    """Read `source`, write every record to `target`; print count, seconds and peak RSS."""
    from bpo.data.formats import read_samples
    from bpo.data.jsonl import JsonlWriter

    start = time.perf_counter()
    count = 0
    with JsonlWriter(target, resume=False) as writer:
        if mode == "llava-json.load":
            with open(source, encoding="utf-8") as handle:
                records = json.load(handle)
            for record in records:
                count += writer.write(record)
        else:
            for sample in read_samples(source, format=mode):
                count += writer.write(sample)
    seconds = time.perf_counter() - start
    print(json.dumps({"records": count, "seconds": seconds, "peak_rss_mib": _peak_rss_mib()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--child", nargs=3, metavar=("SOURCE", "TARGET", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="bpo-bench-") as tmp:
        for count in args.sizes:
            inputs = generate(Path(tmp), count)
            for mode in MODES:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    str(inputs[mode]),
                    f"{tmp}/out.jsonl",
                    mode,
                ]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                assert result["records"] == count, result
                rows.append(
                    {
                        "n": count,
                        "format": mode,
                        "mib_in": inputs[mode].stat().st_size / 2**20,
                        **result,
                    }
                )

    print(
        f"{'N':>8} {'format':<16} {'input MiB':>9} {'seconds':>8} {'records/s':>10} {'peak RSS MiB':>12}"
    )
    for row in rows:
        rate = row["n"] / row["seconds"]
        print(
            f"{row['n']:>8} {row['format']:<16} {row['mib_in']:>9.1f} {row['seconds']:>8.2f} "
            f"{rate:>10.0f} {row['peak_rss_mib']:>12.1f}"
        )
    smallest, largest = min(args.sizes), max(args.sizes)
    growth = {}
    for mode in MODES:
        peak = {row["n"]: row["peak_rss_mib"] for row in rows if row["format"] == mode}
        growth[mode] = peak[largest] / peak[smallest]
        print(f"peak RSS {largest} / {smallest} ({mode}): {growth[mode]:.2f}x")
    streaming_ok = all(growth[mode] <= ALLOWED_GROWTH for mode in ("jsonl", "llava"))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "data_stream",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
        "rss_growth": growth,
        "allowed_growth": ALLOWED_GROWTH,
        "streaming_ok": streaming_ok,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0 if streaming_ok else 1


if __name__ == "__main__":
    sys.exit(main())
