"""A kill -9 harness: run a real `bpo` command, SIGKILL it mid-output, rerun it, compare.

One trial (`kill_and_resume`):

1. start the command in its own process and, once the stage's `Stage.ready`
   says it has written part of its output (or a given delay after a given
   trigger), send it SIGKILL: no handler, no ``finally``, no flush runs, as
   after an OOM kill or a lost node;
2. look at what it left (`half_written`): every file under its final name must
   be whole. Temporaries have hidden names (``.NAME.PID.tmp`` from `bpo.fsio`,
   caches and scratch folders) and are not looked at; an append-only JSONL file may end
   in a torn line, which the next run cuts off (`bpo.data.jsonl.JsonlWriter`);
   a transformers checkpoint folder may be incomplete, which ``--resume``
   passes over (`bpo.train.run_folder.last_checkpoint`). Both are counted apart;
3. run the same command again to the end;
4. compare the folder with an uninterrupted run of the same command in the
   same place (`snapshot`, `compare`): the same files with the same content,
   each JSONL id once, none lost.

The uninterrupted run is made first, in the folder the trial then uses, and
its snapshot kept: paths written into the outputs (run folders in a recipe, a
pickled ``training_args.bin``) are then the same in both, and every other
file is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Per-run counters and timings, not results: they differ between a resumed run and an
# uninterrupted one by design (how much was resumed, how long it took, when).
VOLATILE_KEYS = frozenset(
    {
        "created",  # eval results: a timestamp
        "step_time",  # metrics.jsonl: seconds per step
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_loss",  # transformers: the mean loss of the steps run by this train() call
        "seconds",  # train_result.json: time of the reference pass
        "reused",  # train_result.json: the reference cache was found
        "resumed_from",  # train_result.json: the checkpoint resumed
        "samples_resumed",  # bootstrap summary
        "samples_done",
        "negatives_written",
        "written",  # pairs stats
        "already_present",
        "resumed",  # eval counts
        "generated",
    }
)


def bpo_command(*args: str | os.PathLike[str]) -> list[str]:
    """``bpo ARGS`` in a fresh interpreter (the one running this code)."""
    return [sys.executable, "-m", "bpo.cli", *map(str, args)]


@dataclass
class Kill:
    """How a killed run went.

    Attributes:
        killed: the signal reached a running process (False: it had already exited).
        seconds: from the start to the signal (or to the exit).
        returncode: the process's status (-9 when killed).
    """

    killed: bool
    seconds: float
    returncode: int


def run_and_kill(
    argv: Sequence[str],
    *,
    ready: Callable[[], bool],
    delay: float = 0.0,
    timeout: float = 600,
    log: Path | None = None,
) -> Kill:
    """Start `argv`; SIGKILL it `delay` seconds after `ready()` first returns True.

    Args:
        argv: the command.
        ready: polled every 10 ms (``lambda: True``: count the delay from the start).
        delay: seconds from then to the kill.
        timeout: give up (kill, then raise) after this long.
        log: where the process's stderr goes (default: discarded).
    """
    stderr = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        started = time.monotonic()
        deadline: float | None = None
        process = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=stderr)
        while process.poll() is None:
            now = time.monotonic()
            if deadline is None and ready():
                deadline = now + delay
            if deadline is not None and now >= deadline:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return Kill(True, now - started, process.returncode)
            if now - started > timeout:
                process.kill()
                process.wait()
                raise TimeoutError(f"{argv[3:]} neither finished nor became ready in {timeout}s")
            time.sleep(0.01)
        return Kill(False, time.monotonic() - started, process.returncode)
    finally:
        if log is not None:
            stderr.close()  # type: ignore[union-attr]


def run_to_end(argv: Sequence[str], *, timeout: float = 600) -> float:
    """Run `argv` to the end and return its wall time; a failure raises with its stderr."""
    started = time.monotonic()
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[3:]} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


# --- what a folder holds -----------------------------------------------------------------


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def output_files(root: Path) -> list[Path]:
    """The files under `root` under their final names (hidden temporaries left out)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root))


def temporaries(root: Path) -> list[Path]:
    """The hidden entries under `root` (temporary files, staging folders, caches)."""
    return sorted(p for p in root.rglob(".*") if not _hidden(p.parent, root))


def progress(root: Path) -> int:
    """How much output `root` holds: a unit per JSONL line and per other file."""
    try:
        return sum(
            path.read_bytes().count(b"\n") if path.suffix == ".jsonl" else 1
            for path in output_files(root)
        )
    except FileNotFoundError:  # a file or folder renamed while we looked: look again later
        return 0


def jsonl_key(record: Any) -> str:
    """A JSONL record's identity: its ``id`` (records) or ``step`` (metrics.jsonl)."""
    if isinstance(record, dict):
        for key in ("id", "step"):
            if key in record:
                return f"{key}={record[key]}"
    return json.dumps(record, sort_keys=True)


def read_jsonl(path: Path) -> tuple[list[Any], bool]:
    """The records of a JSONL file and whether its last line is torn (no newline, bad JSON).

    Raises:
        ValueError: a line other than the last is not JSON.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = bool(lines[-1])  # text after the last newline: a write cut short
    records = []
    for number, line in enumerate(lines[:-1], start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error})") from None
    return records, torn


def _normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def half_written(root: Path) -> list[tuple[str, str]]:
    """Files under final names that are not whole, as ``(path, problem)``.

    Problems: ``"torn last line"`` (append-only JSONL: repaired by the next run),
    ``"incomplete checkpoint"`` (a transformers checkpoint folder without its
    final ``trainer_state.json``, whatever its files hold: passed over and
    deleted on resume), anything else is a file that a reader would take for
    complete and is not.
    """
    from bpo.train.run_folder import is_complete_checkpoint

    problems: list[tuple[str, str]] = []
    incomplete = [
        folder
        for folder in sorted(root.rglob("checkpoint-*"))
        if folder.is_dir() and not _hidden(folder, root) and not is_complete_checkpoint(folder)
    ]
    for folder in incomplete:
        problems.append((folder.relative_to(root).as_posix(), "incomplete checkpoint"))
    for path in output_files(root):
        if any(folder in path.parents for folder in incomplete):
            continue
        problem = _file_problem(path)
        if problem is not None:
            problems.append((path.relative_to(root).as_posix(), problem))
    return problems


def _file_problem(path: Path) -> str | None:
    suffix = path.suffix
    try:
        if suffix == ".jsonl":
            return "torn last line" if read_jsonl(path)[1] else None
        if suffix == ".json":
            json.loads(path.read_bytes())
        elif suffix in (".yaml", ".yml"):
            import yaml

            yaml.safe_load(path.read_text(encoding="utf-8"))
        elif suffix == ".html":
            if not path.read_text(encoding="utf-8").rstrip().endswith("</html>"):
                return "HTML without its end"
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as weights:
                for name in weights.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    weights.get_tensor(name)
        elif suffix in (".pt", ".pth", ".bin"):
            # torch.save writes a zip archive whose directory is at the end.
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    return "corrupt archive member"
        elif suffix == ".arrow":
            import pyarrow as pa

            with pa.memory_map(str(path)) as source:
                pa.ipc.open_stream(source).read_all()
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.read_table(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as image:
                image.load()
    except Exception as error:
        return f"unreadable ({type(error).__name__}: {str(error)[:120]})"
    return None


def snapshot(root: Path, *, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, Any]:
    """The content of every output file under `root`, in a comparable form.

    JSONL: ``{key: record}`` (see `jsonl_key`); JSON: the parsed value; per-run
    counters and timings (`VOLATILE_KEYS`) are left out of both. Markdown by its
    sorted lines; anything else by its SHA-256. `skip(rel)` leaves files out.
    """
    content: dict[str, Any] = {}
    for path in output_files(root):
        rel = path.relative_to(root).as_posix()
        if skip(rel):
            continue
        if path.suffix == ".jsonl":
            records, _ = read_jsonl(path)
            content[rel] = {jsonl_key(r): _normalized(r) for r in records}
        elif path.suffix == ".json":
            content[rel] = _normalized(json.loads(path.read_bytes()))
        elif path.suffix == ".md":
            # TRL's model card lists its tags from a set: their order changes per process.
            content[rel] = sorted(path.read_text(encoding="utf-8").splitlines())
        else:
            content[rel] = _sha256(path)
    return content


@dataclass
class Comparison:
    """A resumed folder against the uninterrupted run's snapshot.

    Attributes:
        lost: JSONL records of the uninterrupted run missing after the resume.
        duplicated: JSONL records written more than once (same key) after the resume.
        differences: files missing, extra, or with other content (a few words each).
    """

    lost: int = 0
    duplicated: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (self.lost or self.duplicated or self.differences)


def compare(
    reference: dict[str, Any], root: Path, *, skip: Callable[[str], bool] = lambda rel: False
) -> Comparison:
    """Compare the folder `root` with `reference` (a `snapshot` of the uninterrupted run)."""
    result = Comparison()
    for path in output_files(root):
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".jsonl" and not skip(rel):
            keys = Counter(jsonl_key(r) for r in read_jsonl(path)[0])
            result.duplicated += sum(n - 1 for n in keys.values())
            if rel in reference:
                result.lost += len(set(reference[rel]) - set(keys))
    resumed = snapshot(root, skip=skip)
    for rel in sorted(set(reference) | set(resumed)):
        if rel not in resumed:
            result.differences.append(f"{rel}: missing")
        elif rel not in reference:
            result.differences.append(f"{rel}: not in the uninterrupted run")
        elif resumed[rel] != reference[rel]:
            result.differences.append(f"{rel}: {_difference(reference[rel], resumed[rel])}")
    return result


def _difference(expected: Any, got: Any) -> str:
    if isinstance(expected, dict) and isinstance(got, dict):
        keys = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
        return f"{len(keys)} entries differ, e.g. {keys[:3]}"
    return "other content"


# --- one trial -----------------------------------------------------------------------------


@dataclass
class Stage:
    """A `bpo` command to crash, and how to read its progress.

    Attributes:
        name: the stage's name in reports.
        argv: the command, writing into the folder it is given (the same command
            is used for the uninterrupted run, the killed one and the rerun).
        started: whether the folder holds some of the command's output.
        finished: whether the command's last output is there.
        ready: when the test kills it (default: `started`).
        skip: output files left out of the comparison (relative paths).
        command: names the command: stages with the same command (killed at other
            points) share their uninterrupted run (default: `name`).
    """

    name: str
    argv: Callable[[Path], list[str]]
    started: Callable[[Path], bool]
    finished: Callable[[Path], bool]
    ready: Callable[[Path], bool] | None = None
    skip: Callable[[str], bool] = lambda rel: False
    command: str = ""

    def __post_init__(self) -> None:
        self.command = self.command or self.name


@dataclass
class Trial:
    """What one kill, look and rerun found.

    Attributes:
        kill: how the killed run went.
        mid_output: the kill landed after some output and before the last.
        after_kill: `half_written` problems right after the kill.
        after_resume: `half_written` problems after the rerun (must be none).
        comparison: the rerun's outputs against the uninterrupted run's.
        temporaries: hidden entries left after the rerun (relative paths).
    """

    kill: Kill
    mid_output: bool
    after_kill: list[tuple[str, str]]
    after_resume: list[tuple[str, str]]
    comparison: Comparison
    temporaries: list[str]

    @property
    def torn_tails(self) -> int:
        return sum(problem == "torn last line" for _, problem in self.after_kill)

    @property
    def incomplete_checkpoints(self) -> int:
        return sum(problem == "incomplete checkpoint" for _, problem in self.after_kill)

    @property
    def half_written(self) -> list[tuple[str, str]]:
        """Problems that are not repaired by design: must stay empty."""
        expected = ("torn last line", "incomplete checkpoint")
        return [p for p in self.after_kill if p[1] not in expected] + self.after_resume


def reference_run(stage: Stage, out: Path, *, run: Callable[[list[str]], Any]) -> dict[str, Any]:
    """Run `stage` uninterrupted into `out`, snapshot it, and clear `out` for a trial."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run(stage.argv(out))
    problems = half_written(out)
    if problems:
        raise AssertionError(f"the uninterrupted {stage.name} run left {problems}")
    content = snapshot(out, skip=stage.skip)
    shutil.rmtree(out)
    return content


def kill_and_resume(
    stage: Stage,
    out: Path,
    reference: dict[str, Any],
    *,
    trigger: Callable[[Path], bool] | None = None,
    delay: float = 0.0,
    resume: Callable[[list[str]], Any] = run_to_end,
    timeout: float = 600,
) -> Trial:
    """One trial in a fresh `out`: kill `stage` `delay` seconds after `trigger`, rerun it.

    Args:
        stage: the command.
        out: its folder (the one `reference` was made in).
        reference: the uninterrupted run's `snapshot`.
        trigger: when the delay starts (default: `stage.ready`, else `stage.started`;
            ``lambda out: True``: at the start).
        delay: seconds from the trigger to the kill.
        resume: runs the rerun (default: a fresh process, to the end).
        timeout: seconds allowed to each run.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    when = trigger or stage.ready or stage.started
    kill = run_and_kill(
        stage.argv(out),
        ready=lambda: when(out),
        delay=delay,
        timeout=timeout,
        log=out.parent / f".{out.name}.killed.log",
    )
    mid_output = kill.killed and stage.started(out) and not stage.finished(out)
    after_kill = half_written(out)
    resume(stage.argv(out))
    return Trial(
        kill=kill,
        mid_output=mid_output,
        after_kill=after_kill,
        after_resume=half_written(out),
        comparison=compare(reference, out, skip=stage.skip),
        temporaries=[p.relative_to(out).as_posix() for p in temporaries(out)],
    )
