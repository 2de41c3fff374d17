"""`train.report_to`: TensorBoard events and wandb offline runs, and trackers refused early."""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bpo.config import Recipe, load_recipe
from bpo.errors import ConfigError
from bpo.train.callbacks import read_metrics
from bpo.train.runner import train
from tests.train.conftest import tiny_recipe

STEPS = 2  # enough for a curve of two points; the tiny recipe logs every step


# --- reading the event files back --------------------------------------------------------


def read_events(path: Path) -> Iterator[Any]:
    """The `Event` protos of one TensorBoard event file, each record's checksums verified.

    An event file is a TFRecord file: per record, a little-endian uint64 length, its
    masked CRC32C, the serialized `Event`, the data's masked CRC32C. tensorboardX ships
    the writer and the proto but no reader, hence these lines (the `tensorboard`
    package's reader would bring grpcio and its data server for a test).
    """
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        assert header_crc == masked_crc32c(header), f"{path}: torn record header at {offset}"
        body = data[offset + 12 : offset + 12 + length]
        (body_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert body_crc == masked_crc32c(body), f"{path}: torn record at {offset}"
        yield Event.FromString(body)
        offset += 16 + length


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under `folder`, by tag, as (step, value)."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for event in read_events(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def folder_digest(folder: Path) -> str:
    """A hash of every path and file content under `folder`: equal means nothing was written."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


# --- tensorboard -------------------------------------------------------------------------


def test_tensorboard_events_in_the_run_folder_hold_the_loss(
    tiny_llava_path, pair_data, train_cache, tmp_path, monkeypatch
):
    # dpo_config sets TENSORBOARD_LOGGING_DIR for the run; monkeypatch restores the
    # variable afterwards so no later test inherits this run's folder.
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    run_dir = tmp_path / "run"
    recipe = tiny_recipe(
        tiny_llava_path,
        pair_data,
        run_dir,
        train_cache,
        f"train.max_steps={STEPS}",
        "train.report_to=[tensorboard]",
    )
    train(recipe)

    events = list(run_dir.rglob("events.out.tfevents.*"))
    assert events, f"no event file under {run_dir}"
    # All of them in <run>/tensorboard, none where transformers' default would put them.
    assert all(path.parent == run_dir / "tensorboard" for path in events), events
    scalars = read_scalars(run_dir / "tensorboard")
    logged = [(line["step"], line["loss"]) for line in read_metrics(run_dir / "metrics.jsonl")]
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, STEPS + 1))
    for (step, value), (logged_step, loss) in zip(scalars["train/loss"], logged, strict=True):
        assert step == logged_step
        assert value == pytest.approx(loss, rel=1e-6)  # events hold float32
    assert "train/rewards/margins" in scalars


# --- refused before any model loads ------------------------------------------------------


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run gets as far as loading the processor or the model, or tokenizing."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the run went on past the tracker check")

    # train() imports these inside its body, so it picks up the patched attributes.
    monkeypatch.setattr("bpo.train.model.load_processor", refuse)
    monkeypatch.setattr("bpo.train.model.load_model", refuse)
    monkeypatch.setattr("bpo.train.data.tokenize_pairs", refuse)


def _valid_recipe(tiny_llava_path: Path, pair_data: Any, run_dir: Path) -> Recipe:
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("a folder that already holds something\n")
    return tiny_recipe(tiny_llava_path, pair_data, run_dir, None)


def test_an_unknown_tracker_is_one_line_naming_the_valid_ones(tiny_llava_path, pair_data, tmp_path):
    with pytest.raises(ConfigError) as refused:
        tiny_recipe(tiny_llava_path, pair_data, tmp_path / "run", None, "train.report_to=foo")
    message = str(refused.value)
    assert "\n" not in message
    assert "'foo'" in message and "tensorboard" in message and "wandb" in message
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        load_recipe(None, ["train.report_to=TensorBoard"])
    with pytest.raises(ConfigError, match="stand alone"):
        load_recipe(None, ["train.report_to=[none, wandb]"])
    # No tracking: the default, an empty list and transformers' "none".
    for override in ("train.report_to=[]", "train.report_to=none"):
        load_recipe(None, [override])


def test_an_unknown_tracker_set_in_code_stops_train_before_loading(
    tiny_llava_path, pair_data, tmp_path, no_loading
):
    run_dir = tmp_path / "run"
    recipe = _valid_recipe(tiny_llava_path, pair_data, run_dir)
    recipe.train.report_to = ["foo"]  # past load_recipe's check: the Python API
    before = folder_digest(run_dir)
    with pytest.raises(ConfigError, match="'foo' is not a tracker"):
        train(recipe)
    assert folder_digest(run_dir) == before


@pytest.mark.parametrize(
    ("tracker", "modules", "command"),
    [
        ("wandb", ["wandb"], "pip install 'bpo[wandb]'"),
        ("tensorboard", ["tensorboard", "tensorboardX"], "pip install tensorboardX"),
    ],
)
def test_a_tracker_not_installed_stops_train_before_loading(
    tiny_llava_path, pair_data, tmp_path, monkeypatch, no_loading, tracker, modules, command
):
    # A None in sys.modules makes importlib.util.find_spec (transformers' check) and
    # `import` both see the package as absent, as on a machine without it.
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    run_dir = tmp_path / "run"
    recipe = _valid_recipe(tiny_llava_path, pair_data, run_dir)
    recipe.train.report_to = [tracker]
    before = folder_digest(run_dir)
    with pytest.raises(ConfigError) as refused:
        train(recipe)
    assert command in str(refused.value) and "\n" not in str(refused.value)
    assert folder_digest(run_dir) == before
    # Loading a recipe does not ask: a run trained with the tracker can be exported without it.
    load_recipe(None, [f"train.report_to=[{tracker}]"])


def test_bpo_train_prints_the_refusal_as_one_line(tiny_llava_path, pair_data, tmp_path, capsys):
    from bpo.cli import main
    from tests.train.conftest import RECIPES

    code = main(
        ["train", "--config", str(RECIPES / "tiny.yaml"), f"model.name={tiny_llava_path}",
         f"data.pairs={pair_data.pairs}", f"train.output_dir={tmp_path / 'run'}",
         "train.report_to=foo"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bpo train: error:") and "'foo' is not a tracker" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


# --- wandb -------------------------------------------------------------------------------


def test_wandb_offline_run_logs_the_loss(
    tiny_llava_path, pair_data, train_cache, tmp_path, monkeypatch
):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'bpo[wandb]')")
    # Offline: wandb writes its run files under WANDB_DIR and never opens a connection.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "bpo-tests")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "run"
    recipe = tiny_recipe(
        tiny_llava_path,
        pair_data,
        run_dir,
        train_cache,
        f"train.max_steps={STEPS}",
        "train.report_to=[wandb]",
    )
    try:
        train(recipe)
        # transformers' WandbCallback leaves the run open after training (for a later
        # evaluation); its summary holds the last value logged.
        run = wandb.run
        assert run is not None and run.offline
        logged = read_metrics(run_dir / "metrics.jsonl")
        assert run.summary["train/loss"] == pytest.approx(logged[-1]["loss"], rel=1e-6)
        assert run.summary["train/global_step"] == STEPS
    finally:
        wandb.finish()
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    (records,) = offline.glob("run-*.wandb")
    assert records.stat().st_size > 0
