"""How long `bpo demo` takes end to end, in a fresh folder (target: at most 5 minutes).

Usage: .venv/bin/python bench/demo.py [--from-scratch]

Runs the demo as a user would (a subprocess of the `bpo` command), then prints
the wall time, the time each stage's marker appeared, and the before/after
table; writes bench/results/demo.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 300


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-scratch", action="store_true", help="train the base model too")
    args = parser.parse_args()
    bpo = Path(sys.executable).parent / "bpo"
    with tempfile.TemporaryDirectory(prefix="bpo-bench-demo-") as scratch:
        out = Path(scratch) / "demo"
        command = [str(bpo), "demo", "--out", str(out), "--no-progress"]
        if args.from_scratch:
            command.append("--from-scratch")
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.time() - started
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        stages = {
            marker.stem: round(marker.stat().st_mtime - started, 1)
            for marker in sorted((out / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime)
        }
    result = {"seconds": round(seconds, 1), "target": TARGET_SECONDS, "stages_done_at": stages}
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    print(done.stdout)
    print(f"bpo demo: {seconds:.0f} s (target {TARGET_SECONDS} s); stages done at: {stages}")
    return 0 if seconds <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
