"""The interface every bootstrap strategy implements."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from bpo.data.records import Negative, Sample, negative_id

__all__ = ["BootstrapStrategy", "negative_id"]

if TYPE_CHECKING:
    from PIL import Image


class BootstrapStrategy(Protocol):
    """Turns supervised samples into rejected responses.

    Attributes:
        name: the strategy's name, also written into each negative.
        needs_image: whether the runner must load each sample's image.
        dropped: outputs filtered out, counted by reason.
    """

    name: str
    needs_image: bool
    dropped: Counter[str]

    def fit(self, samples: Iterable[Sample]) -> None:
        """One streaming pass over all samples before generation (may do nothing)."""

    def generate(
        self,
        batch: Sequence[tuple[Sample, Image.Image | None]],
        *,
        num_negatives: int,
        seed: int,
    ) -> list[list[Negative]]:
        """Up to `num_negatives` negatives per sample, in the batch's order."""
        ...
