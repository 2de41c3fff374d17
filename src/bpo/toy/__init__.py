"""The toy world of `bpo demo`: synthetic scenes with a co-occurrence prior and a biased base model.

- `bpo.toy.scenes`: categories, statistics, drawing, captions, questions;
- `bpo.toy.world`: `write_world` / `ToyWorld`, the world as a dataset on disk;
- `bpo.toy.base_model`: `build_base_model`, the biased tiny LLaVA, and the shipped checkpoint;
- `bpo.toy.metrics`: `caption_metrics`, the absent-partner rate and recalls.

Importing this package stays light (no torch); the heavy imports happen inside functions.
"""

from __future__ import annotations

from bpo.toy.base_model import build_base_model, shipped_checkpoint
from bpo.toy.metrics import caption_metrics, grounding_score
from bpo.toy.world import ToyWorld, write_world

__all__ = [
    "ToyWorld",
    "build_base_model",
    "caption_metrics",
    "grounding_score",
    "shipped_checkpoint",
    "write_world",
]
