"""bench/gpu.py's arguments, its peak table and its exit on a machine without CUDA."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.fixture(scope="module")
def gpu() -> ModuleType:
    """bench/gpu.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_measure_both_shapes_and_sections(gpu: ModuleType) -> None:
    args = gpu.parse_args([])
    assert args.shapes == ["llava-1.5-7b", "qwen2.5-vl-7b"]
    assert args.skip == []
    assert (args.steps, args.warmup, args.samples, args.max_new_tokens) == (10, 3, 64, 64)
    assert args.peak_tflops is None
    assert args.output == gpu.RESULTS


def test_flags_are_read(gpu: ModuleType, tmp_path: Path) -> None:
    output = str(tmp_path / "gpu.json")
    args = gpu.parse_args(
        [
            "--shapes",
            "qwen2.5-vl-7b",
            "--skip",
            "generation",
            "--steps",
            "20",
            "--peak-tflops",
            "500",
            "--output",
            output,
        ]
    )
    assert args.shapes == ["qwen2.5-vl-7b"]
    assert args.skip == ["generation"]
    assert args.steps == 20
    assert args.peak_tflops == 500.0
    assert args.output == tmp_path / "gpu.json"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shapes", "llama-70b"], "invalid choice"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--warmup", "-1"], "--warmup must be at least 0"),
        (["--peak-tflops", "0"], "--peak-tflops must be positive"),
        (["--skip", "train", "generation"], "nothing to measure"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    gpu: ModuleType, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        gpu.parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "override", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", None, 989.0),
        ("NVIDIA H100 PCIe", None, 756.0),
        ("NVIDIA H200", None, 989.0),
        ("NVIDIA A100-SXM4-80GB", None, 312.0),
        ("NVIDIA GeForce RTX 4090", None, None),
        ("NVIDIA GeForce RTX 4090", 165.0, 165.0),
        ("NVIDIA H100 80GB HBM3", 900.0, 900.0),
    ],
)
def test_peak_by_device_name_or_override(
    gpu: ModuleType, name: str, override: float | None, peak: float | None
) -> None:
    assert gpu.peak_tflops(name, override) == peak


def test_without_cuda_it_says_so_in_one_line_and_exits_3(
    gpu: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    output = tmp_path / "gpu.json"
    assert gpu.main(["--output", str(output)]) == gpu.NO_CUDA == 3
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert "CUDA" in lines[0] and "nothing measured" in lines[0]
    assert not output.exists()


def test_help_lists_the_shapes(gpu: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        gpu.parse_args(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "llava-1.5-7b" in out and "qwen2.5-vl-7b" in out
