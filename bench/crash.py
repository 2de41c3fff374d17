"""Benchmark: kill -9 at random points of every stage, rerun, count what was lost.

For each stage of `tests/crash/stages.py` (bootstrap, pairs and its three
exports, pairs with ``--mix`` on many text-only negatives, the reference
log-prob pass, training, eval, `bpo run`), on the tiny random LLaVA and real
photos:

1. one uninterrupted run of the real `bpo` command, in a fresh process, whose
   outputs are kept (`tests.crash.harness.snapshot`) and which is watched to
   learn the stage's output window: from its first output to its last, in
   seconds and in output units (`tests.crash.harness.progress`: a unit per
   JSONL line and per other file);
2. K trials, each in the same folder, emptied: start the command, SIGKILL it
   at a random point, check what it left, run the same command again to the
   end in a fresh process, and compare with the uninterrupted run
   (`tests.crash.harness.kill_and_resume`). In 4 trials of 5 the kill comes as
   soon as the folder holds a number of units drawn uniformly from the window
   (so kills spread over the output, not over the seconds, which start-up and
   a model's first call dominate); in the others at a time drawn uniformly
   from the start-up, before any output.

The table, per stage: trials; kills that landed mid-output (after the first
output and before the last; the others hit start-up or the very end); records
lost and written twice (JSONL records by id, over every output file); files
half-written under their final names (after the kill or after the rerun);
reruns whose outputs differ from the uninterrupted run; and, expected and
repaired, JSONL files ending in a torn line and incomplete transformers
checkpoints passed over on resume; hidden temporaries left behind.

Usage::

    .venv/bin/python bench/crash.py                        # K=20, 5 for the slow stages
    .venv/bin/python bench/crash.py --trials 10 --slow-trials 3
    .venv/bin/python bench/crash.py --stages pairs eval --trials 5 --samples 24

Writes ``bench/results/crash.json`` and exits with status 1 if any record was
lost or duplicated, any file half-written or any rerun differed. With the
defaults (95 trials) it took about 20 minutes on a shared 2-core machine: each
trial starts two `bpo` processes, and their start-up (torch, transformers)
dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "crash.json"
# The training stages take 10-30 s a run; the others a few seconds.
SLOW = ("reference", "train", "pipeline")
# Trials killed during start-up, before any output (the rest are killed mid-output).
START_UP_SHARE = 0.2
COLUMNS = (
    ("trials", "trials"),
    ("mid_output", "mid-output kills"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("half_written", "half-written"),
    ("differed", "differed"),
    ("torn_tails", "torn tails repaired"),
    ("incomplete_checkpoints", "incomplete ckpts skipped"),
    ("temporaries", "temporaries left"),
)


@dataclass
class Window:
    """When a stage's output began and ended in the uninterrupted run, in time and in units.

    Units: `tests.crash.harness.progress` (JSONL lines and other files in the folder).
    """

    begin_s: float = 0.0
    end_s: float = 0.0
    begin_units: int = 0
    end_units: int = 0


def watched_run(stages: dict[str, Any], out: Path, log: Path) -> tuple[float, dict[str, Window]]:
    """Run the stages' command into `out` to the end, and find each stage's output window."""
    from tests.crash.harness import progress

    windows = {name: Window() for name in stages}
    begun: set[str] = set()
    ended: set[str] = set()
    argv = next(iter(stages.values())).argv(out)
    started = time.monotonic()
    with open(log, "wb") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        while process.poll() is None:
            now = time.monotonic() - started
            for name, stage in stages.items():
                window = windows[name]
                if name not in begun and stage.started(out):
                    begun.add(name)
                    window.begin_s, window.begin_units = now, progress(out)
                if name in begun and name not in ended and stage.finished(out):
                    ended.add(name)
                    window.end_s, window.end_units = now, progress(out)
            time.sleep(0.01)
    total = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"{argv[3:]} failed:\n{log.read_text()[-3000:]}")
    for name, window in windows.items():
        if name not in ended:  # too fast to see: the whole run
            window.end_s, window.end_units = total, progress(out)
    return total, windows


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the tests: tiny models, busy cores
    sys.path.insert(0, str(ROOT))
    from tests.crash.harness import half_written, kill_and_resume, progress, snapshot
    from tests.crash.stages import build_workspace, stages

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per stage (default 20)")
    parser.add_argument(
        "--slow-trials", type=int, default=5, help=f"trials of {', '.join(SLOW)} (default 5)"
    )
    parser.add_argument("--stages", nargs="+", help="only these stages")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument(
        "--samples",
        type=int,
        default=48,
        help="samples (pairs, eval items) of the workspace (default 48; the tests use 24)",
    )
    args = parser.parse_args(argv)

    from bpo.tiny_models import build_tiny_model

    rng = random.Random(args.seed)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "seed": args.seed,
        "samples": args.samples,
        "stages": {},
    }
    with tempfile.TemporaryDirectory(prefix="bpo-crash-") as folder:
        root = Path(folder)
        model = build_tiny_model("llava", root / "model", seed=0)
        space = build_workspace(root / "inputs", model, samples=args.samples)
        chosen = {
            name: stage
            for name, stage in stages(space).items()
            if not args.stages or name in args.stages
        }
        commands: dict[str, list[str]] = {}
        for name, stage in chosen.items():
            commands.setdefault(stage.command, []).append(name)
        for command, names in commands.items():
            out = root / "runs" / command
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            watched = {name: chosen[name] for name in names}
            total, windows = watched_run(watched, out, root / f"{command}.log")
            problems = half_written(out)
            if problems:
                raise RuntimeError(f"the uninterrupted {command} run left {problems}")
            reference = snapshot(out, skip=chosen[names[0]].skip)
            print(f"{command}: uninterrupted run {total:.1f}s", file=sys.stderr, flush=True)
            for name in names:
                stage, window = chosen[name], windows[name]
                trials = args.slow_trials if name in SLOW else args.trials
                rows = []
                for index in range(trials):
                    if rng.random() < START_UP_SHARE:
                        delay = rng.uniform(0.0, window.begin_s)
                        point = f"{delay:.2f}s after the start"
                        trial = kill_and_resume(
                            stage, out, reference, trigger=lambda out: True, delay=delay
                        )
                    else:
                        units = rng.randint(max(window.begin_units, 1), window.end_units)
                        point = f"at {units} output units"

                        def reached(out: Path, units: int = units) -> bool:
                            return progress(out) >= units

                        trial = kill_and_resume(stage, out, reference, trigger=reached)
                    rows.append(
                        {
                            "kill_point": point,
                            "killed": trial.kill.killed,
                            "killed_after_s": round(trial.kill.seconds, 2),
                            "mid_output": trial.mid_output,
                            "lost": trial.comparison.lost,
                            "duplicated": trial.comparison.duplicated,
                            "half_written": [list(p) for p in trial.half_written],
                            "differences": trial.comparison.differences,
                            "torn_tails": trial.torn_tails,
                            "incomplete_checkpoints": trial.incomplete_checkpoints,
                            "temporaries": trial.temporaries,
                        }
                    )
                    print(
                        f"  {name} {index + 1}/{trials}: kill {point}, "
                        f"mid-output {trial.mid_output}, same {trial.comparison.same}, "
                        f"half-written {len(trial.half_written)}",
                        file=sys.stderr,
                        flush=True,
                    )
                report["stages"][name] = {
                    "uninterrupted_s": round(total, 2),
                    "window": asdict(window),
                    "summary": summarize(rows),
                    "trials": rows,
                }
    print(table(report["stages"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {RESULTS}", file=sys.stderr)
    failed = any(
        stage["summary"][key]
        for stage in report["stages"].values()
        for key in ("lost", "duplicated", "half_written", "differed")
    )
    return 1 if failed else 0


def summarize(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The table's counts over a stage's trials."""
    return {
        "trials": len(rows),
        "mid_output": sum(row["mid_output"] for row in rows),
        "lost": sum(row["lost"] for row in rows),
        "duplicated": sum(row["duplicated"] for row in rows),
        "half_written": sum(len(row["half_written"]) for row in rows),
        "differed": sum(bool(row["differences"]) for row in rows),
        "torn_tails": sum(row["torn_tails"] for row in rows),
        "incomplete_checkpoints": sum(row["incomplete_checkpoints"] for row in rows),
        "temporaries": sum(len(row["temporaries"]) for row in rows),
    }


def table(stages: dict[str, Any]) -> str:
    header = ["stage", *(title for _, title in COLUMNS)]
    rows = [header] + [
        [name, *(str(stage["summary"][key]) for key, _ in COLUMNS)]
        for name, stage in stages.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


if __name__ == "__main__":
    sys.exit(main())
