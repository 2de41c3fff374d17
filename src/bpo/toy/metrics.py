"""The toy world's own measures of co-occurrence hallucination, from generated captions.

CHAIR and POPE are scored by `bpo.eval` on the same files; these are what only
the toy world can say, because it knows which object is the absent partner:

- ``cf_absent_partner_rate``: the share of counterfactual scenes whose caption
  names the dependent the scene lacks (the anchor is there): the bias itself;
- ``cf_recall``: the share of the objects present in counterfactual scenes
  that their captions name;
- ``normal_dependent_recall``: the share of the dependents present in normal
  scenes that their captions name (what suppressing the bias may cost);
- ``normal_recall``: the same over every object of the normal scenes;
- ``partner_error_rate`` and ``confusion_rate``: over all scenes, the share of
  captions naming an absent partner of a present anchor (a co-occurrence error)
  and the share naming some other absent object (a visual confusion).

Objects are read from the captions with the project's object lexicon, as CHAIR
reads them. Counts come with the rates, so results can be pooled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bpo.data.records import Sample
from bpo.errors import RecordError
from bpo.lexicon import ObjectLexicon
from bpo.toy.scenes import WorldSpec


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def caption_metrics(
    samples: Iterable[Sample],
    predictions: Mapping[str, str],
    *,
    spec: WorldSpec | None = None,
    lexicon: ObjectLexicon | None = None,
) -> dict[str, Any]:
    """Score generated captions of toy scenes (see the module docstring for each measure).

    Args:
        samples: the scenes' samples (e.g. ``ToyWorld.samples("test")``); only
            caption samples (``meta.task == "caption"``) are scored.
        predictions: sample id -> generated caption.
        spec: the world (default `WorldSpec()`), for its anchor -> dependent pairs.
        lexicon: reads objects from captions (default `ObjectLexicon.default()`).

    Returns:
        The rates (NaN where nothing was there to count) and the counts behind them.

    Raises:
        RecordError: a caption sample without a prediction, or without ``meta.objects``.
    """
    spec = spec if spec is not None else WorldSpec()
    lexicon = lexicon if lexicon is not None else ObjectLexicon.default()
    partner = spec.partner
    dependents = set(spec.dependents)
    counts = dict.fromkeys(
        (
            "scenes",
            "cf_scenes",
            "cf_absent_partner",
            "cf_objects",
            "cf_objects_named",
            "normal_scenes",
            "normal_objects",
            "normal_objects_named",
            "normal_dependents",
            "normal_dependents_named",
            "captions_with_partner_error",
            "captions_with_confusion",
        ),
        0,
    )
    for sample in samples:
        if sample.meta.get("task", "caption") != "caption":
            continue
        if sample.id not in predictions:
            raise RecordError("no prediction for this sample", record_id=sample.id)
        objects = sample.meta.get("objects")
        if not isinstance(objects, list):
            raise RecordError("meta.objects is missing", record_id=sample.id)
        present = set(objects)
        named = lexicon.objects(predictions[sample.id])
        absent_partners = {partner[a] for a in present if a in partner} - present
        counts["scenes"] += 1
        counts["captions_with_partner_error"] += bool(named & absent_partners)
        counts["captions_with_confusion"] += bool(named - present - absent_partners)
        if sample.meta.get("counterfactual"):
            counts["cf_scenes"] += 1
            counts["cf_absent_partner"] += sample.meta.get("absent_partner") in named
            counts["cf_objects"] += len(present)
            counts["cf_objects_named"] += len(present & named)
        else:
            counts["normal_scenes"] += 1
            counts["normal_objects"] += len(present)
            counts["normal_objects_named"] += len(present & named)
            counts["normal_dependents"] += len(present & dependents)
            counts["normal_dependents_named"] += len(present & dependents & named)
    return {
        "cf_absent_partner_rate": _rate(counts["cf_absent_partner"], counts["cf_scenes"]),
        "cf_recall": _rate(counts["cf_objects_named"], counts["cf_objects"]),
        "normal_dependent_recall": _rate(
            counts["normal_dependents_named"], counts["normal_dependents"]
        ),
        "normal_recall": _rate(counts["normal_objects_named"], counts["normal_objects"]),
        "partner_error_rate": _rate(counts["captions_with_partner_error"], counts["scenes"]),
        "confusion_rate": _rate(counts["captions_with_confusion"], counts["scenes"]),
        "counts": counts,
    }


def grounding_score(metrics: Mapping[str, Any]) -> float:
    """Normal dependent recall minus the counterfactual absent-partner rate.

    The score study 2 of issue 6 made its choices by on the validation split:
    it rewards seeing the weak object when it is there and not naming it when it is not.
    """
    return float(metrics["normal_dependent_recall"]) - float(metrics["cf_absent_partner_rate"])
