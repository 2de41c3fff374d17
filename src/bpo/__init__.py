"""bpo: Bootstrapped Preference Optimization for vision-language models.

The stages as functions, with the CLI's settings (see `bpo.api`)::

    import bpo

    bpo.bootstrap("samples.json", strategy="cooccurrence", out="negatives.jsonl")
    bpo.pairs("samples.json", "negatives.jsonl", out="pairs.jsonl")
    bpo.train(config="recipes/tiny.yaml", overrides=["data.pairs=pairs.jsonl"])
    bpo.evaluate(bench="chair", data="chair.jsonl", model="runs/m", out="eval/m")
    bpo.report("runs/demo")
    bpo.run("recipes/tiny.yaml", ["samples.path=samples.json"], out="runs/t")

Each is imported on first use, so ``import bpo`` loads nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Stages whose package has the stage's name (calling it runs the stage) and the others.
_STAGE_PACKAGES = ("bootstrap", "pairs", "train", "report")
_STAGE_FUNCTIONS = ("evaluate", "run")
__all__ = [*_STAGE_PACKAGES, *_STAGE_FUNCTIONS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _STAGE_PACKAGES:
        return importlib.import_module(f"bpo.{name}")
    if name in _STAGE_FUNCTIONS:
        return getattr(importlib.import_module("bpo.api"), name)
    raise AttributeError(f"module 'bpo' has no attribute {name!r}")
