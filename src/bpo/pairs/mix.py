"""Mixing strategies in given proportions: quotas and a seeded draw independent of order."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

from bpo.data.jsonl import iter_jsonl
from bpo.data.records import Pair
from bpo.errors import ConfigError
from bpo.pairs.filters import stable_hash
from bpo.pairs.stats import PairStats


def parse_mix(items: Sequence[str]) -> dict[str, Fraction]:
    """Parse ``STRATEGY=RATIO`` items into exact weights (they need not sum to 1).

    Raises:
        ConfigError: on a malformed item, a negative weight, a repeated strategy,
            or weights that are all zero.
    """
    ratios: dict[str, Fraction] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            ratio = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            ratio = Fraction(-1)
        if not sep or not name or ratio < 0:
            raise ConfigError(f"--mix takes STRATEGY=RATIO with RATIO >= 0, got {item!r}")
        if name in ratios:
            raise ConfigError(f"--mix names strategy {name!r} twice")
        ratios[name] = ratio
    if ratios and not any(ratios.values()):
        raise ConfigError("--mix: at least one ratio must be above 0")
    return ratios


def mix_quotas(counts: Mapping[str, int], ratios: Mapping[str, Fraction]) -> dict[str, int]:
    """How many pairs of each strategy to keep so that they follow `ratios`.

    The rule: the largest total T for which every strategy can supply its share,
    T = min over strategies with a positive ratio of count / share, and then
    floor(T * share) pairs of each (shares are the ratios normalised to sum 1;
    exact fractions, so the binding strategy keeps all its pairs). Strategies
    absent from `ratios` or with ratio 0 keep none.

    Raises:
        ConfigError: if a strategy with a positive ratio has no pairs, since the
            only total that respects the ratios would then be 0.
    """
    weight = sum(ratios.values(), Fraction(0))
    shares = {name: ratio / weight for name, ratio in ratios.items() if ratio > 0}
    missing = sorted(name for name in shares if not counts.get(name, 0))
    if missing:
        raise ConfigError(
            f"--mix asks for strategies with no pairs left after filtering: {', '.join(missing)} "
            f"(strategies present: {', '.join(sorted(n for n in counts if counts[n])) or 'none'})"
        )
    total = min(Fraction(counts[name]) / share for name, share in shares.items())
    return {name: int(total * shares[name]) if name in shares else 0 for name in counts}


def mix_key(seed: int, pair_id: str) -> int:
    """The rank of a pair in the mixing draw: a stable hash of the seed and its id."""
    return stable_hash(str(seed), pair_id)


def select_mix(
    pairs: Iterable[Pair],
    ratios: Mapping[str, Fraction],
    *,
    seed: int,
    stats: PairStats,
    spill: str | os.PathLike[str],
) -> Iterator[Pair]:
    """Subsample `pairs` so that the strategies follow `ratios` (see `mix_quotas`).

    Within a strategy the pairs with the smallest `mix_key` are kept: a seeded
    draw that does not depend on the order or the batching of the input. The
    input is spilled to the JSONL file `spill` (counts must be known before
    choosing), which is overwritten (a copy left by a killed run included) and
    removed at the end; the output keeps the input order.
    """
    import numpy as np

    keys: dict[str, list[int]] = defaultdict(list)
    spill = Path(spill)
    try:
        with open(spill, "w", encoding="utf-8") as handle:
            for pair in pairs:
                keys[pair.strategy].append(mix_key(seed, pair.id))
                handle.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")
        quotas = mix_quotas({name: len(values) for name, values in keys.items()}, ratios)
        # The quota-th smallest key of each strategy; keys are 64-bit hashes, so
        # ties (which could keep one pair too many) have probability ~2^-64.
        thresholds: dict[str, int | None] = {}
        for name, values in keys.items():
            quota = quotas[name]
            array = np.asarray(values, dtype=np.uint64)
            thresholds[name] = int(np.partition(array, quota - 1)[quota - 1]) if quota else None
        for _, data in iter_jsonl(spill):
            pair = Pair.from_dict(data)
            threshold = thresholds[pair.strategy]
            if threshold is not None and mix_key(seed, pair.id) <= threshold:
                yield pair
            else:
                stats.drop(pair.strategy, "mix")
    finally:
        spill.unlink(missing_ok=True)
