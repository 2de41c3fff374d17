"""`bpo export` under kill -9: never a half checkpoint under --out; a rerun writes the same files.

The run folder is made by hand (a recipe and a PEFT adapter with random LoRA weights on the
tiny LLaVA), so no training is needed; `bpo export` runs as a real subprocess and is
SIGKILLed while its staging folder exists, i.e. mid-write.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bpo.checkpoints import UnsafeCheckpointError
from bpo.config import load_recipe, save_recipe
from bpo.train.export import export_run

KILL_TRIALS = int(os.environ.get("BPO_EXPORT_KILL_TRIALS", "20"))


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def run_dir(tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `bpo train` run folder: config.yaml and adapter/ (with its processor)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = tmp_path_factory.mktemp("run")
    save_recipe(load_recipe(None, [f"model.name={tiny_llava_path}"]), folder / "config.yaml")
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_path)
    # init_lora_weights=False: random B too, so the merged model differs from the base.
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder / "adapter")
    AutoProcessor.from_pretrained(tiny_llava_path).save_pretrained(folder / "adapter")
    return folder


@pytest.fixture(scope="module")
def uninterrupted(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The digests of a merged export that ran to the end, in this process."""
    out = export_run(run_dir, tmp_path_factory.mktemp("clean") / "merged", merge=True)
    return digests(out)


# `bpo export` as a real process, held after the weights are written and before the
# processor is: the moment a non-atomic export would leave a half checkpoint under --out.
HELD_EXPORT = """
import sys, time
import transformers
save = transformers.ProcessorMixin.save_pretrained
def held(self, *args, **kwargs):
    time.sleep(120)
    return save(self, *args, **kwargs)
transformers.ProcessorMixin.save_pretrained = held
from bpo.cli import main
sys.exit(main(sys.argv[1:]))
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def _export(run_dir: Path, out: Path, *, held: bool = False) -> subprocess.Popen[bytes]:
    entry = ["-c", HELD_EXPORT] if held else ["-m", "bpo.cli"]
    command = [sys.executable, *entry, "export", str(run_dir), "--merge", "--out", str(out)]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _staging(out: Path, process: subprocess.Popen[bytes]) -> Path:
    """The folder `bpo.fsio.atomic_dir` fills for `out` in `process`."""
    return out.parent / f".{out.name}.{socket.gethostname()}.{process.pid}.tmp"


def _wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)


def _kill(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"bpo export failed on its own: {stderr[-2000:]}")
    return process.returncode


def _rerun_gives_the_same_files(run_dir: Path, out: Path, uninterrupted: dict[str, str]) -> None:
    rerun = _export(run_dir, out)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode() if rerun.stderr else ""
    if rerun.stderr is not None:
        rerun.stderr.close()
    assert digests(out) == uninterrupted
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == []  # the killed export's staging folder was cleaned up


def test_kill_9_mid_write_leaves_no_half_checkpoint(run_dir, uninterrupted, tmp_path) -> None:
    out = tmp_path / "merged"
    process = _export(run_dir, out, held=True)
    staging = _staging(out, process)
    _wait_for(staging / "model.safetensors", process)
    time.sleep(0.5)  # the weights are written; the process waits in the processor's save
    assert _kill(process) == -signal.SIGKILL
    half = {path.name for path in staging.iterdir()}
    assert "model.safetensors" in half and "processor_config.json" not in half
    assert not out.exists()  # the half checkpoint stayed in the staging folder
    _rerun_gives_the_same_files(run_dir, out, uninterrupted)


@pytest.mark.slow
def test_kill_9_at_random_moments_of_the_write(run_dir, uninterrupted, tmp_path) -> None:
    """BPO_EXPORT_KILL_TRIALS (default 20) unheld exports, each killed 0-40 ms after its
    staging folder appears (the tiny model's write takes about 30 ms)."""
    import random

    rng = random.Random(0)
    mid_write = finished = 0
    for trial in range(KILL_TRIALS):
        out = tmp_path / f"merged-{trial}"
        process = _export(run_dir, out)
        staging = _staging(out, process)
        _wait_for(staging, process)
        time.sleep(rng.uniform(0, 0.04))
        killed = _kill(process) == -signal.SIGKILL and staging.exists()
        mid_write += killed
        if out.exists():  # the rename came first: the export is whole
            finished += 1
            assert digests(out) == uninterrupted
            continue
        _rerun_gives_the_same_files(run_dir, out, uninterrupted)
    print(
        f"\nexport kill -9: {KILL_TRIALS} trials, {mid_write} killed mid-write, {finished} "
        "finished first; 0 half checkpoints under --out; every rerun byte-identical"
    )
    assert mid_write > 0


def test_export_is_reproducible_and_stale_staging_is_removed(run_dir, uninterrupted, tmp_path):
    stale = (
        tmp_path / f".merged.{socket.gethostname()}.999999999.tmp"
    )  # a staging folder whose process is gone
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".merged.{os.getpid()}.tmp.keep"
    live.mkdir()  # not a staging name: left alone
    out = export_run(run_dir, tmp_path / "merged", merge=True)
    assert digests(out) == uninterrupted
    assert not stale.exists() and live.exists()
    assert "model.safetensors" in uninterrupted and "processor_config.json" in uninterrupted


def test_export_refuses_a_pickle_adapter_unless_allowed(run_dir, uninterrupted, tmp_path):
    from safetensors.torch import load_file

    from bpo.cli import main

    pickled = tmp_path / "run"
    (pickled / "adapter").mkdir(parents=True)
    (pickled / "config.yaml").write_bytes((run_dir / "config.yaml").read_bytes())
    for item in (run_dir / "adapter").iterdir():
        if item.name != "adapter_model.safetensors":
            (pickled / "adapter" / item.name).write_bytes(item.read_bytes())
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    torch.save(weights, pickled / "adapter" / "adapter_model.bin")

    for merge in (True, False):
        with pytest.raises(UnsafeCheckpointError, match=r"adapter_model\.bin.*--allow-pickle"):
            export_run(pickled, tmp_path / f"refused-{merge}", merge=merge)
        assert not (tmp_path / f"refused-{merge}").exists()
    out = tmp_path / "allowed"
    assert main(["export", str(pickled), "--merge", "--allow-pickle", "--out", str(out)]) == 0
    assert digests(out) == uninterrupted  # the same weights, read from a pickle
