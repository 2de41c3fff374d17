"""`export_run`: a trained run as a standard checkpoint (merged) or as its adapter.

The merged checkpoint is what `AutoModelForImageTextToText.from_pretrained`
loads with no PEFT in sight (and so lmms-eval and VLMEvalKit can evaluate it):
the base model with the LoRA weights folded in by PEFT's ``merge_and_unload``,
saved with its processor and generation config.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bpo.config import load_recipe
from bpo.errors import ConfigError

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _source(run_dir: Path, checkpoint: str | None) -> Path:
    if checkpoint is None:
        for name in ("adapter", "model"):
            if (run_dir / name).is_dir():
                return run_dir / name
        raise ConfigError(f"{run_dir} holds no trained adapter or model (is the run finished?)")
    candidate = Path(checkpoint)
    if not candidate.is_dir():
        candidate = run_dir / "checkpoints" / checkpoint
        if checkpoint.isdigit():
            candidate = run_dir / "checkpoints" / f"checkpoint-{checkpoint}"
    if not candidate.is_dir():
        raise ConfigError(f"{run_dir}: no checkpoint {checkpoint!r}")
    return candidate


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    merge: bool = True,
    checkpoint: str | None = None,
    dtype: str | None = None,
) -> Path:
    """Write a run's result to `out_dir`.

    Args:
        run_dir: the folder `bpo train` wrote.
        out_dir: where the checkpoint goes (created; must not hold files).
        merge: fold the LoRA adapter into the base model (a standard checkpoint);
            without it the adapter is copied as is (PEFT format).
        checkpoint: export ``checkpoints/checkpoint-<step>`` (a step, a name or a
            path) rather than the final adapter.
        dtype: the dtype of the merged weights (default: the recipe's ``model.dtype``).

    Returns:
        `out_dir`.

    Raises:
        ConfigError: when the run has nothing to export or `out_dir` is not empty.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from bpo.compat import allow_processors_without_torchvision

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise ConfigError(f"{run_dir} is not a bpo train run folder (no config.yaml)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty; choose an empty or new folder")
    recipe = load_recipe(config_path)
    source = _source(run_dir, checkpoint)
    dtype = dtype or recipe.model.dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    is_adapter = (source / "adapter_config.json").exists()
    allow_processors_without_torchvision()

    out_dir.mkdir(parents=True, exist_ok=True)
    if is_adapter and not merge:
        for item in source.iterdir():
            if item.is_file() and not item.name.startswith(("optimizer", "scheduler", "rng_state")):
                shutil.copy2(item, out_dir / item.name)
        return out_dir

    processor_source = source if (source / "tokenizer_config.json").exists() else None
    processor = AutoProcessor.from_pretrained(
        str(processor_source) if processor_source else recipe.model.name,
        revision=None if processor_source else recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    if is_adapter:
        from peft import PeftModel

        base = AutoModelForImageTextToText.from_pretrained(
            recipe.model.name,
            revision=recipe.model.revision,
            dtype=torch_dtype,
            trust_remote_code=recipe.model.trust_remote_code,
        )
        model = PeftModel.from_pretrained(base, str(source)).merge_and_unload()
    else:
        model = AutoModelForImageTextToText.from_pretrained(str(source), dtype=torch_dtype)
    model.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    return out_dir
