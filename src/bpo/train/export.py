"""`export_run`: a trained run as a standard checkpoint (merged) or as its adapter.

The merged checkpoint is what `AutoModelForImageTextToText.from_pretrained`
loads with no PEFT in sight (and so lmms-eval and VLMEvalKit can evaluate it):
the base model with the LoRA weights folded in by PEFT's ``merge_and_unload``,
saved with its processor and generation config. Every load goes through
`bpo.checkpoints` (safetensors only, no shipped code, unless the run's recipe or the
caller allows them); the output folder appears only once complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from bpo.checkpoints import check_weights, is_trainer_state, load_adapter
from bpo.config import Recipe, load_recipe
from bpo.errors import ConfigError
from bpo.fsio import atomic_dir

_DTYPES = ("auto", "float32", "bfloat16", "float16")
# accelerate's folder of a sharded FSDP checkpoint (torch.distributed.checkpoint format).
FSDP_SHARDED_PREFIX = "pytorch_model_fsdp_"


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
    sharded = sorted(candidate.glob(f"{FSDP_SHARDED_PREFIX}*/"))
    if sharded and not any(
        (candidate / name).exists() for name in ("adapter_config.json", "config.json")
    ):
        raise ConfigError(
            f"{candidate} holds FSDP's sharded weights ({sharded[0].name}/, "
            "fsdp_state_dict_type: SHARDED_STATE_DICT), which bpo export does not read: "
            f"export the run's final adapter or model (leave out --checkpoint; bpo saves it "
            "whole), or resume with --resume to the end; recipes/accelerate/fsdp.yaml "
            "(FULL_STATE_DICT) saves checkpoints that export reads"
        )
    return candidate


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    merge: bool = True,
    checkpoint: str | None = None,
    dtype: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Path:
    """Write a run's result to `out_dir`, all at once.

    The files are written to a staging folder next to `out_dir` and renamed into place
    when complete (`bpo.fsio.atomic_dir`): a crash or ``kill -9`` never leaves a half
    checkpoint under `out_dir`, and running the export again writes the same files.

    Args:
        run_dir: the folder `bpo train` wrote.
        out_dir: where the checkpoint goes (created; must not hold files).
        merge: fold the LoRA adapter into the base model (a standard checkpoint);
            without it the adapter is copied as is (PEFT format).
        checkpoint: export ``checkpoints/checkpoint-<step>`` (a step, a name or a
            path) rather than the final adapter.
        dtype: the dtype of the merged weights (default: the recipe's ``model.dtype``).
        allow_pickle: load pickle-based weights (also allowed by the run's recipe,
            ``model.allow_pickle``); safetensors only otherwise.
        trust_remote_code: run code shipped with the base model (also allowed by the
            run's recipe, ``model.trust_remote_code``).

    Returns:
        `out_dir`.

    Raises:
        ConfigError: when the run has nothing to export or `out_dir` is not empty.
        UnsafeCheckpointError: for pickle weights or shipped code not allowed.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise ConfigError(f"{run_dir} is not a bpo train run folder (no config.yaml)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty; choose an empty or new folder")
    recipe = load_recipe(config_path)
    recipe.model.allow_pickle = recipe.model.allow_pickle or allow_pickle
    recipe.model.trust_remote_code = recipe.model.trust_remote_code or trust_remote_code
    source = _source(run_dir, checkpoint)
    dtype = dtype or recipe.model.dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    if (source / "adapter_config.json").exists() and not merge:
        check_weights(source, allow_pickle=recipe.model.allow_pickle, adapter=True)
        with atomic_dir(out_dir) as staging:
            for item in sorted(source.iterdir()):
                if item.is_file() and not is_trainer_state(item.name):
                    shutil.copy2(item, staging / item.name)
        return out_dir

    model, processor = _load_merged(recipe, source, dtype)
    with atomic_dir(out_dir) as staging:
        model.save_pretrained(str(staging))
        processor.save_pretrained(str(staging))
    return out_dir


def _load_merged(recipe: Recipe, source: Path, dtype: str) -> tuple[Any, Any]:
    """The model to export (the base with the adapter merged in) and its processor."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from bpo.compat import allow_processors_without_torchvision
    from bpo.train.model import model_source

    allow_processors_without_torchvision()
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    # The processor saved next to the trained weights when there is one, else the base's;
    # as saved, without the recipe's processor_kwargs.
    processor_model = recipe.model
    if (source / "tokenizer_config.json").exists():
        processor_model = dataclasses.replace(recipe.model, name=str(source), revision=None)
    processor = model_source(processor_model, weights=False).load(AutoProcessor, "processor")
    if (source / "adapter_config.json").exists():
        base = model_source(recipe.model).load_model(AutoModelForImageTextToText, dtype=torch_dtype)
        adapted = load_adapter(base, source, allow_pickle=recipe.model.allow_pickle)
        return adapted.merge_and_unload(), processor
    full = dataclasses.replace(recipe.model, name=str(source), revision=None)
    return model_source(full).load_model(AutoModelForImageTextToText, dtype=torch_dtype), processor
