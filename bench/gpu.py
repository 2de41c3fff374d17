"""Benchmark on one CUDA GPU: `bpo train` against TRL's DPOTrainer, and generation, at 7B shapes.

Random models at the shapes of LLaVA-1.5-7B and Qwen2.5-VL-7B (`SHAPES`), built from
configs with `bpo.tiny_models` (nothing is downloaded) and saved in bfloat16, then,
side by side in one run on the same GPU:

- training (`bench/train.py`'s workers, each in a fresh process, bf16 on the GPU):
  TRL's `DPOTrainer` (``trl``), `bpo train` (``bpo``: reference log-probs precomputed,
  the shared-prompt layout) and `bpo train` with TRL's two sequences per pair
  (``bpo-trl-layout``); LoRA r 32 on every linear layer of the language model, 4 pairs
  a step, ~576 image tokens per prompt, gradient checkpointing on, sdpa attention.
  Reported: median step time, tokens/s, peak GPU memory, and MFU against the device's
  dense bf16 peak (`PEAK_TFLOPS`, or ``--peak-tflops``);
- generation: the hf backend (batches of 16) against vLLM's offline engine
  (`bpo.backends.vllm`), samples/s on the same requests (64 greedy prompts over
  photos, 64 new tokens); vLLM is skipped, with a note, where it is not installed.

Tokens and MFU count the same work for every run: the tokens of TRL's layout
(``[prompt | chosen]`` and ``[prompt | rejected]`` per pair) and 4 FLOPs per
language-model parameter and token (a forward pass and the backward pass through the
activations; LoRA's weight gradients, the vision tower, attention scores and
checkpointing's recomputation are left out, so MFU is a lower bound and the ratios
of MFU between runs are those of their step times). The vocabulary is the tiny
tokenizer's (~1k ids), so the embeddings and LM head are smaller than the hub
models' (0.13 B parameters of LLaVA-1.5-7B, 1.1 B of Qwen2.5-VL-7B).

Attention kernels: the shared-prompt layout needs a 4D attention mask, which sdpa
and eager take (`bpo.train.shared_prompt.ATTENTION_KERNELS`); flash-attention takes
none, and with flex attention `bpo train` falls back to TRL's layout, so the packed
run is measured with sdpa, as TRL's.

Usage::

    .venv/bin/python bench/gpu.py                          # both shapes, 10 timed steps
    .venv/bin/python bench/gpu.py --shapes llava-1.5-7b --steps 20
    .venv/bin/python bench/gpu.py --skip generation --peak-tflops 989

Prints a table and writes ``bench/results/gpu.json``. Exit status: 0 when it ran;
3 without a CUDA device (one line says so, nothing is measured: a GPU job whose
CUDA is broken must not pass as a run); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "gpu.json"
NO_CUDA = 3

# name -> (bpo.tiny_models arch, sizes). From the hub configs: llava-hf/llava-1.5-7b-hf
# (Vicuna-7B; CLIP ViT-L/14 at 336 px: 24 x 24 = 576 image tokens) and
# Qwen/Qwen2.5-VL-7B-Instruct (its ViT: 14 px patches merged 2 x 2, so 576 tokens for
# 672 x 672 px; `bpo.tiny_models` gives it an MLP of 2 x 1280 where the hub's is 3420).
SHAPES: dict[str, tuple[str, dict[str, int]]] = {
    "llava-1.5-7b": (
        "llava",
        {
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "intermediate_size": 11008,
            "vision_hidden_size": 1024,
            "vision_num_hidden_layers": 24,
            "vision_num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
        },
    ),
    "qwen2.5-vl-7b": (
        "qwen2.5-vl",
        {
            "hidden_size": 3584,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "intermediate_size": 18944,
            "vision_hidden_size": 1280,
            "vision_num_hidden_layers": 32,
            "vision_num_attention_heads": 16,
            "image_size": 672,  # max_pixels 672^2; build_model sets min_pixels to it too
        },
    ),
}
# Dense bf16 tensor-core peaks in TFLOPS, from NVIDIA's data sheets (SXM parts; without
# sparsity). Matched against torch.cuda.get_device_name in this order, most specific first.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)
SECTIONS = ("train", "generation")
TRAIN_RUNS = ("trl", "bpo", "bpo-trl-layout")
LORA_RANK = 32
BATCH = 4
GENERATION_BATCH = 16


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/gpu.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES), help="model shapes"
    )
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="sections to skip")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (default 3)")
    parser.add_argument("--samples", type=int, default=64, help="generation requests (default 64)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="per request (default 64)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense bf16 peak for MFU (default: from the table of known devices)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = make_parser().parse_args(argv)
    for name in ("steps", "samples", "max_new_tokens"):
        if getattr(args, name) < 1:
            make_parser().error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        make_parser().error("--warmup must be at least 0")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        make_parser().error("--peak-tflops must be positive")
    if set(args.skip) == set(SECTIONS):
        make_parser().error("--skip leaves nothing to measure")
    return args


def peak_tflops(device_name: str, override: float | None) -> float | None:
    """The dense bf16 peak of `device_name`: `override`, else the table's, else None."""
    if override is not None:
        return override
    return next((peak for key, peak in PEAK_TFLOPS if key in device_name), None)


def build_model(shape: str, folder: Path) -> tuple[Path, int]:
    """Build `shape` on the GPU (random weights: seconds there, minutes on a CPU), save it in bf16.

    Returns the checkpoint and its language model's parameter count.
    """
    import torch

    from bpo.tiny_models import family, tiny_size
    from bpo.tiny_models.common import describe, save

    arch, sizes = SHAPES[shape]
    size = tiny_size(arch, **sizes)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model, processor = family(arch).build(size)
    model.to(torch.bfloat16)
    language = sum(p.numel() for name, p in model.named_parameters() if "language_model" in name)
    path = save(model, processor, folder / shape, describe(arch, 0, size))
    del model
    torch.cuda.empty_cache()
    if arch == "qwen2.5-vl":  # every photo at the full pixel budget: ~576 image tokens
        config_file = path / "processor_config.json"
        config = json.loads(config_file.read_text())
        size_limits = config["image_processor"]["size"]  # in pixels: min and max
        size_limits["shortest_edge"] = size_limits["longest_edge"]
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    return path, language


def train_rows(
    model: Path,
    language_parameters: int,
    folder: Path,
    args: argparse.Namespace,
    peak: float | None,
) -> list[dict[str, Any]]:
    """The three training runs on `model`, each in a fresh process (bench/train.py's workers)."""
    import train as train_bench  # bench/train.py (on sys.path from main)
    from bpo.exports import export_trl

    work = folder / "train"
    pairs, image_root = train_bench.make_data(work, BATCH * (args.warmup + args.steps))
    export_trl(pairs, work / "export", image_root=image_root)
    common = [
        "--work", str(work), "--model", str(model), "--pairs", str(pairs),
        "--image-root", str(image_root), "--export", str(work / "export" / "pairs_trl"),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(BATCH),
        "--threads", "4", "--cuda", "--lora-r", str(LORA_RANK),
    ]  # fmt: skip
    rows = []
    for name in TRAIN_RUNS:
        done = subprocess.run(
            [sys.executable, str(BENCH / "train.py"), "--worker", name, *common],
            capture_output=True,
            text=True,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"training run {name} failed on {model.name}")
        rows.append({"run": name, **json.loads(lines[-1][len("RESULT ") :])})
    counted = next(row for row in rows if "prompt_tokens" in row)
    # TRL's layout: the prompt twice, each response once (the same count for every run).
    tokens = BATCH * 2 * (counted["prompt_tokens"] + counted["response_tokens"])
    for row in rows:
        seconds = row["step_time_median_s"]
        row["tokens_per_step"] = tokens
        row["tokens_per_s"] = tokens / seconds
        row["step_time_ratio"] = seconds / rows[0]["step_time_median_s"]
        row["mfu"] = (
            None if peak is None else 4 * language_parameters * tokens / seconds / (peak * 1e12)
        )
        row["max_loss_diff_vs_trl"] = max(
            abs(a - b) for a, b in zip(row["losses"], rows[0]["losses"], strict=True)
        )
    return rows


def _timed_generation(
    name: str, model: Path, options: dict[str, Any], requests: list[Any]
) -> tuple[float, list[str]]:
    """Seconds and texts of backend `name` on `requests`, after a warm-up batch."""
    import torch

    from bpo.backends import get_backend

    backend = get_backend(name, model=str(model), **options)
    try:
        backend.generate(requests[:GENERATION_BATCH])  # warm-up: kernels, allocator, graphs
        torch.cuda.synchronize()
        started = time.perf_counter()
        texts = backend.generate(requests)
        torch.cuda.synchronize()
        return time.perf_counter() - started, texts
    finally:
        backend.close()
        torch.cuda.empty_cache()


def generation_rows(model: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """hf (batches of 16) and, where installed, vLLM: samples/s on the same greedy requests."""
    import generation as generation_bench  # bench/generation.py: its requests

    requests = generation_bench.workload(args.samples, args.max_new_tokens)
    engines = [("hf", {"device": "cuda", "dtype": "bfloat16", "batch_size": GENERATION_BATCH})]
    if importlib.util.find_spec("vllm") is not None:
        engines.append(("vllm", {"dtype": "bfloat16"}))
    rows: list[dict[str, Any]] = []
    texts: dict[str, list[str]] = {}
    for name, options in engines:
        try:
            seconds, texts[name] = _timed_generation(name, model, options, requests)
        except Exception as error:  # vLLM's own failures are its result, not the run's end
            if name == "hf":
                raise
            rows.append({"engine": name, "note": f"failed: {type(error).__name__}: {error}"})
            continue
        rows.append({"engine": name, "seconds": seconds, "samples_per_s": args.samples / seconds})
    if "vllm" in texts:
        same = sum(a == b for a, b in zip(texts["hf"], texts["vllm"], strict=True))
        rows[-1]["same_texts_as_hf"] = f"{same}/{args.samples}"
    elif len(engines) == 1:
        rows.append({"engine": "vllm", "note": "not installed: pip install vllm"})
    return rows


def print_tables(results: dict[str, Any]) -> None:
    print(f"{results['device']}: bf16 peak {results['peak_tflops'] or 'unknown'} TFLOPS")
    for shape, sections in results["shapes"].items():
        for row in sections.get("train", []):
            mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
            print(
                f"{shape:<14} {row['run']:<15} step {row['step_time_median_s']:7.3f} s "
                f"(x{row['step_time_ratio']:.2f})  {row['tokens_per_s']:9.0f} tok/s  "
                f"peak {row['peak_cuda_mib'] / 1024:6.1f} GiB  MFU {mfu}"
            )
        for row in sections.get("generation", []):
            if "note" in row:
                print(f"{shape:<14} {row['engine']:<15} {row['note']}")
            else:
                agree = (
                    f"  same texts as hf {row['same_texts_as_hf']}"
                    if "same_texts_as_hf" in row
                    else ""
                )
                print(
                    f"{shape:<14} {row['engine']:<15} {row['samples_per_s']:8.1f} samples/s{agree}"
                )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "bench/gpu.py measures on a CUDA GPU and torch sees none here: nothing measured "
            f"(exit status {NO_CUDA})"
        )
        return NO_CUDA
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import transformers
    import trl

    sys.path.insert(0, str(BENCH))  # bench/train.py's workers, bench/generation.py's requests
    device = torch.cuda.get_device_name()
    peak = peak_tflops(device, args.peak_tflops)
    results: dict[str, Any] = {
        "benchmark": "gpu",
        "device": device,
        "peak_tflops": peak,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "python": platform.python_version(),
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "batch": BATCH,
            "lora_rank": LORA_RANK,
            "samples": args.samples,
            "max_new_tokens": args.max_new_tokens,
            "generation_batch": GENERATION_BATCH,
        },
        "shapes": {},
    }
    for shape in args.shapes:
        with tempfile.TemporaryDirectory(prefix="bpo-bench-gpu-") as work:
            folder = Path(work)
            model, language_parameters = build_model(shape, folder)
            sections: dict[str, Any] = {"language_parameters": language_parameters}
            if "train" not in args.skip:
                sections["train"] = train_rows(model, language_parameters, folder, args, peak)
            if "generation" not in args.skip:
                sections["generation"] = generation_rows(model, args)
            results["shapes"][shape] = sections
    print_tables(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"-> {args.output}")
    if peak is None:
        print(f"MFU left out: {device!r} is not in the table of peaks; pass --peak-tflops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
