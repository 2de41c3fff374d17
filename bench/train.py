"""Benchmark: `bpo train` (LoRA, precomputed reference) against TRL's DPOTrainer defaults for VLMs.

Side by side in one run: the same small VLM of one family (``--arch``, a
`bpo.tiny_models` name; default LLaVA) built from a config at tiny-but-realistic
shapes (`ARCH_SIZES`: a 6-layer 448-wide language model, a 4-layer 256-wide vision
tower, and images of the family's own processing that make a few hundred image
tokens per prompt; LLaVA: ~19M parameters, 144 image tokens), the same pairs on
real photos (skimage.data), the same LoRA (rank 8 on every linear layer of the
language model), batch, learning rate, steps and seed. Each trainer runs in its
own fresh Python process, so its peak RSS (``ru_maxrss``) is its own.

- ``trl``: `trl.DPOTrainer` as a user would call it on the TRL export of the
  pairs, with every other setting at TRL 1.16's default (reference forward pass
  at each step with the adapter disabled, images and chat template processed by
  its collator at each step, gradient checkpointing on).
- ``bpo``: `bpo.train.train` on the pairs JSONL: pairs tokenized once,
  reference log-probs computed once before training (their time is reported
  apart, as ``reference_s``), each prompt and image run once for both responses
  (`bpo.train.shared_prompt`), gradient checkpointing on as in TRL. Two variants
  show where the time goes: ``bpo-trl-layout`` (TRL's two sequences per pair:
  the precomputed reference and one-time tokenization alone) and ``bpo-no-ckpt``
  (gradient checkpointing off, as the tiny recipe runs).

``wall_s`` is the whole call, model loading, tokenization and reference pass included.

Step time is the median wall time of an optimizer step (data loading included)
after the first ``--warmup`` steps, from the same `MetricsLogger` callback in
every process. The per-step losses of the runs are compared too: same model,
data order and seed, so they must agree (the check that both compute the same DPO).

Usage::

    .venv/bin/python bench/train.py                 # LLaVA, 12 steps of 4 pairs, 1 thread
    .venv/bin/python bench/train.py --arch gemma3 --runs trl bpo
    .venv/bin/python bench/train.py --steps 20 --batch 8 --threads 2

Prints a table and writes ``bench/results/train-<arch>.json``. Targets (issues "bpo
train" and "Every VLM family"): step-time ratio bpo/trl at most 0.7 (aim 0.5; 0.5
on Qwen2.5-VL and Gemma 3), peak RSS no higher than TRL's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# The language model and vision tower of every family (see the module docstring).
MODEL_SIZE = {
    "hidden_size": 448,
    "num_hidden_layers": 6,
    "num_attention_heads": 7,
    "num_key_value_heads": 7,
    "intermediate_size": 1216,
    "vision_hidden_size": 256,
    "vision_num_hidden_layers": 4,
    "vision_num_attention_heads": 4,
}
# arch -> how its images are sized (`bpo.tiny_models.TinySize`, read by each family module),
# for a few hundred image tokens per prompt on the 300-640 px photos, as hub checkpoints give
# at their own resolutions (LLaVA-1.5: 576; Gemma 3, PaliGemma-224: 256). The comments give
# the mean image tokens per prompt measured on the bench's pairs.
ARCH_SIZES: dict[str, dict[str, int]] = {
    "llava": {"image_size": 96},  # 8 px patches: 12 x 12 = 144
    "llava-next": {"image_size": 64},  # anyres: a base tile + the grid's, 64 each: 271
    "llava-onevision": {"image_size": 64},  # the same tiling: 271
    "qwen2-vl": {"image_size": 448},  # max_pixels 448^2, 28 px per merged token: 220
    "qwen2.5-vl": {"image_size": 448},  # 218
    "qwen3-vl": {"image_size": 512},  # 32 px per merged token: 197
    "gemma3": {"image_size": 256},  # 32 x 32 patches pooled 2 x 2: 256
    "idefics3": {"image_size": 128},  # 64 per tile, 4 tiles + the whole image: 320
    "smolvlm": {"image_size": 128},  # 320
    # Not measured yet: bpo's collator fails on them (pixtral's rounding, PaliGemma's
    # text-only calls, InternVL's tiles) until its fix lands.
    "mistral3": {"image_size": 256},  # longest edge 256, 16 px per merged token: <= 256
    "paligemma": {"image_size": 128},  # 16 x 16 = 256 (paligemma-224: 256)
    "internvl": {"image_size": 64},  # 16 per tile, up to 12 tiles + a thumbnail
}
RUNS = ("trl", "bpo", "bpo-trl-layout", "bpo-no-ckpt")
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}

LEARNING_RATE = 1e-4
SEED = 0
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "horse", "cat")


def lora_at(r: int) -> dict[str, Any]:
    """`LORA` at rank `r` (bench/gpu.py's --lora-r), alpha scaled with it (alpha / r kept)."""
    return {**LORA, "r": r, "alpha": LORA["alpha"] * r // LORA["r"]}


TARGET_RATIO, AIM_RATIO = 0.7, 0.5

# Detail answers of a few dozen words, as in LLaVA-style preference data.
_WORDS = (  # noqa: SIM905 (one string reads better than a long list)
    "the image shows a person cat dog cup table chair red blue green white black small large "
    "left right next to on under near holding sitting standing wooden metal two three several "
    "background foreground"
).split()


def make_data(folder: Path, count: int) -> tuple[Path, Path]:
    """Write `count` pairs on real photos as a pairs JSONL file; return (pairs, image root)."""
    import random

    from PIL import Image
    from skimage import data

    images = folder / "images"
    images.mkdir(parents=True)
    for name in PHOTOS:
        array = getattr(data, name)()
        Image.fromarray(array).convert("RGB").save(images / f"{name}.jpg")
    rng = random.Random(SEED)

    def text(words: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."

    pairs = folder / "pairs.jsonl"
    with open(pairs, "w", encoding="utf-8") as handle:
        for i in range(count):
            row = {
                "id": f"p{i}",
                "image": f"{PHOTOS[i % len(PHOTOS)]}.jpg",
                "prompt": [{"role": "user", "content": "Describe the image in detail."}],
                "chosen": text(rng.randint(30, 60)),
                "rejected": text(rng.randint(30, 60)),
                "strategy": "image-weakening",
            }
            handle.write(json.dumps(row) + "\n")
    return pairs, images


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _summary(metrics_path: Path, warmup: int) -> dict[str, Any]:
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    times = [line["step_time"] for line in lines][warmup:]
    return {
        "losses": [line["loss"] for line in lines],
        "step_times": [line["step_time"] for line in lines],
        "step_time_median_s": statistics.median(times),
        "step_time_mean_s": statistics.fmean(times),
    }


# bpo runs: name -> (gradient checkpointing, shared prompt).
BPO_RUNS = {"bpo": (True, True), "bpo-trl-layout": (True, False), "bpo-no-ckpt": (False, True)}


def worker_bpo(
    args: argparse.Namespace, gradient_checkpointing: bool, share: bool
) -> dict[str, Any]:
    from bpo.config import load_recipe
    from bpo.train.runner import train

    out = Path(args.work) / args.worker
    lora = lora_at(args.lora_r)
    recipe = load_recipe(
        None,
        [
            f"model.name={args.model}",
            f"data.pairs={args.pairs}",
            f"data.image_root={args.image_root}",
            "data.max_length=1024",  # TRL's default
            f"lora.r={lora['r']}",
            f"lora.alpha={lora['alpha']}",
            f"lora.dropout={lora['dropout']}",
            f"train.output_dir={out}",
            f"train.learning_rate={LEARNING_RATE}",
            "train.lr_scheduler_type=constant",
            "train.warmup_ratio=0.0",
            f"train.max_steps={args.warmup + args.steps}",
            f"train.per_device_train_batch_size={args.batch}",
            f"train.gradient_checkpointing={str(gradient_checkpointing).lower()}",
            f"train.share_prompt={str(share).lower()}",
            f"train.use_cpu={str(not args.cuda).lower()}",
            f"train.bf16={str(args.cuda).lower()}",
            f"train.seed={SEED}",
            "train.logging_steps=1",
            f"train.save_steps={10 * (args.warmup + args.steps)}",
        ],
    )
    started = time.perf_counter()
    result = train(recipe)
    total = time.perf_counter() - started
    summary = _summary(out / "metrics.jsonl", args.warmup)
    reference = result.reference or {}
    return {
        **summary,
        "reference_s": reference.get("seconds", 0.0),
        "wall_s": total,
        **_token_counts(out, args.model),
    }


def _token_counts(out: Path, model: str) -> dict[str, float]:
    """Mean prompt, image and response tokens per pair, from the run's tokenized pairs."""
    import datasets
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    image_token = getattr(config, "image_token_id", None)
    if image_token is None:
        image_token = getattr(config, "image_token_index", None)
    (folder,) = (out / "cache").glob("tokens-*/dataset")
    rows = datasets.load_from_disk(str(folder))
    prompts = rows["prompt_ids"]
    responses = [
        len(c) + len(r) for c, r in zip(rows["chosen_ids"], rows["rejected_ids"], strict=True)
    ]
    return {
        "prompt_tokens": statistics.fmean(len(p) for p in prompts),
        "image_tokens": statistics.fmean(sum(t == image_token for t in p) for p in prompts),
        "response_tokens": statistics.fmean(responses) / 2,
    }


def worker_trl(args: argparse.Namespace) -> dict[str, Any]:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer

    from bpo.compat import allow_processors_without_torchvision
    from bpo.train.callbacks import MetricsLogger
    from bpo.train.model import lora_target_pattern

    allow_processors_without_torchvision()  # Qwen's, SmolVLM's ... processors load images alone
    out = Path(args.work) / "trl"
    started = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    dataset = datasets.load_from_disk(args.export)
    config = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=args.batch,
        max_steps=args.warmup + args.steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        seed=SEED,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not args.cuda,
        bf16=args.cuda,  # TRL's default (bf16) needs a GPU
    )
    lora = lora_at(args.lora_r)
    peft_config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora_target_pattern(model, None),  # the same layers as bpo's
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[MetricsLogger(out / "metrics.jsonl")],
    )
    trainer.train()
    total = time.perf_counter() - started
    return {**_summary(out / "metrics.jsonl", args.warmup), "reference_s": 0.0, "wall_s": total}


def run_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    trl_run = args.worker == "trl"
    result = worker_trl(args) if trl_run else worker_bpo(args, *BPO_RUNS[args.worker])
    result["peak_rss_mib"] = _peak_rss_mib()
    if args.cuda:
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps (default: 12)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (default: 2)")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step (default: 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    parser.add_argument(
        "--arch",
        default="llava",
        choices=sorted(ARCH_SIZES),
        help="the VLM family (default: llava)",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=list(RUNS),
        choices=RUNS,
        help="the runs to make; ratios are to the first (default: all four, trl first)",
    )
    parser.add_argument("--worker", choices=RUNS, help=argparse.SUPPRESS)
    # bench/gpu.py runs the workers on a GPU (bf16), at its own LoRA rank.
    parser.add_argument("--cuda", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lora-r", type=int, default=LORA["r"], help=argparse.SUPPRESS)
    for hidden in ("--work", "--model", "--pairs", "--image-root", "--export"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from bpo.exports import export_trl
    from bpo.tiny_models import build_tiny_model

    # Ratios are to the first run: trl, except for a family TRL's collator cannot
    # batch (PaliGemma), where bpo-trl-layout stands in (bpo's batches, TRL's layout).
    sizes = {**MODEL_SIZE, **ARCH_SIZES[args.arch]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bpo-bench-train-") as work:
        folder = Path(work)
        model = build_tiny_model(args.arch, folder / "model", seed=SEED, **sizes)
        pairs, image_root = make_data(folder, args.batch * (args.warmup + args.steps))
        export_trl(pairs, folder / "export", image_root=image_root)
        common = [
            "--work", str(folder), "--model", str(model), "--pairs", str(pairs),
            "--image-root", str(image_root), "--export", str(folder / "export" / "pairs_trl"),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
            "--threads", str(args.threads),
        ]  # fmt: skip
        for name in args.runs:
            done = subprocess.run(
                [sys.executable, __file__, "--worker", name, *common],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
            )
            result_lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode != 0 or not result_lines:
                print(done.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{name} run failed")
            rows.append({"run": name, **json.loads(result_lines[-1][len("RESULT ") :])})

    import transformers
    import trl

    base = rows[0]
    for row in rows:
        row["step_time_ratio"] = row["step_time_median_s"] / base["step_time_median_s"]
        row["rss_ratio"] = row["peak_rss_mib"] / base["peak_rss_mib"]
        row["max_loss_diff_vs_first"] = max(
            abs(a - b) for a, b in zip(row["losses"], base["losses"], strict=True)
        )
    print(
        f"{'run':<15} {'step s':>8} {'ratio':>6} {'ref s':>6} {'wall s':>7} {'peak RSS MiB':>13} "
        f"{'ratio':>6} {'max |dloss|':>11}"
    )
    for row in rows:
        print(
            f"{row['run']:<15} {row['step_time_median_s']:>8.3f} {row['step_time_ratio']:>6.2f} "
            f"{row['reference_s']:>6.1f} {row['wall_s']:>7.1f} {row['peak_rss_mib']:>13.0f} "
            f"{row['rss_ratio']:>6.2f} {row['max_loss_diff_vs_first']:>11.2e}"
        )
    counts = next((row for row in rows if "prompt_tokens" in row), None)
    if counts is not None:
        print(
            f"{args.arch}: per pair {counts['prompt_tokens']:.0f} prompt tokens "
            f"({counts['image_tokens']:.0f} image), {counts['response_tokens']:.0f} per response"
        )
    ours = next((row for row in rows if row["run"] == "bpo"), None)
    if ours is None:
        return 0
    verdict = {
        "step_time_ratio_target_met": ours["step_time_ratio"] <= TARGET_RATIO,
        "step_time_ratio_aim_met": ours["step_time_ratio"] <= AIM_RATIO,
        "peak_rss_target_met": ours["rss_ratio"] <= 1.0,
    }
    print(
        f"bpo vs {base['run']} (same gradient checkpointing): "
        f"step time x{ours['step_time_ratio']:.2f} "
        f"(target <= {TARGET_RATIO}, aim {AIM_RATIO}), peak RSS x{ours['rss_ratio']:.2f} (target <= 1)"
    )
    payload = {
        "benchmark": "train",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "settings": {
            "arch": args.arch,
            "model": sizes,
            "lora": lora_at(args.lora_r),
            "steps": args.steps,
            "warmup": args.warmup,
            "batch": args.batch,
            "threads": args.threads,
            "seed": SEED,
        },
        "rows": rows,
        "verdict": verdict,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = RESULTS / f"train-{args.arch}.json"
    results.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"-> {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
