"""Hallucination benchmarks, scored as the reference implementations do.

- `bpo.eval.pope`: yes/no object questions; the reference and a robust answer parser.
- `bpo.eval.chair`: objects named in descriptions but absent from the image.
- `bpo.eval.mmhal`: open questions rated 0-6 by a text-only judge (`bpo.eval.judge`, cached).
- `bpo.eval.amber`: AMBER's generative (CHAIR, Cover, Hal, Cog) and yes/no tasks.
- `bpo.eval.objhal`: Object HalBench, CHAIR on 300 detailed descriptions.
- `bpo.eval.hallusion`: HallusionBench, per question, figure and question pair.
- `bpo.eval.benches`: the benchmarks by name (`BENCHES`), as the runner uses them.
- `bpo.eval.items`: benchmark items; answers made elsewhere matched to them.
- `bpo.eval.generation`: answering items through any backend, resumably.
- `bpo.eval.runner`: a benchmark end to end (`evaluate`); results.json.
- `bpo.eval.compare`: a run's table; several runs' metrics side by side.

The scorers work without the CLI, on plain lists or on bpo samples that carry
their answers' ground truth in ``meta`` (``meta.label``, ``meta.objects``):
`score_pope`, `score_chair`, `score_mmhal`, `score_hallusion`, and the modules'
``score_samples``.
"""

from __future__ import annotations

from bpo.eval.chair import score_chair
from bpo.eval.hallusion import score_hallusion
from bpo.eval.mmhal import Rating, parse_rating, score_mmhal
from bpo.eval.pope import parse_reference, parse_robust, score_pope

__all__ = [
    "Rating",
    "parse_rating",
    "parse_reference",
    "parse_robust",
    "score_chair",
    "score_hallusion",
    "score_mmhal",
    "score_pope",
]
