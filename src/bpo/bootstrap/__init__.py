"""Bootstrapping rejected responses: image-weakening, llm-injection, cooccurrence."""

from __future__ import annotations

import hashlib


def sample_seed(seed: int, sample_id: str, k: int = 0) -> int:
    """A 31-bit seed for negative `k` of one sample, independent of batch order.

    Derived from a stable hash, so a resumed or sharded run draws exactly what an
    uninterrupted run would have drawn for the same sample.
    """
    digest = hashlib.blake2b(f"{seed}\x00{sample_id}\x00{k}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


# `bpo.bootstrap(...)` runs the stage, as `bpo bootstrap` does (`bpo.api`).
from bpo.api import callable_stage  # noqa: E402

callable_stage(__name__, "bootstrap")
