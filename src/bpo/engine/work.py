"""A stage's work on one batch of records, as a picklable object a Ray actor can hold.

Each work object is built from what names its model (`BackendSpec`, `StrategySpec`)
or around a model already built here; `prepare` builds what is missing (once per
process: in a Ray actor, once per replica), `__call__` maps one batch to its
`BatchResult`. Errors a user can cause (`BpoError`) come back in the result rather
than as exceptions, so the driver applies ``--on-error`` to them whichever engine
ran the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bpo.errors import BpoError

if TYPE_CHECKING:
    from PIL import Image

    from bpo.backends import Backend, GenerationRequest
    from bpo.bootstrap.base import BootstrapStrategy
    from bpo.data.records import Sample


@dataclass
class BatchResult:
    """What one batch gave.

    Attributes:
        outputs: one output per record of the batch, in order (None when `error`).
        error: the error the batch failed with.
        dropped: outputs the work filtered out, by reason (bootstrap strategies).
    """

    outputs: list[Any] | None = None
    error: BpoError | None = None
    dropped: Counter[str] = field(default_factory=Counter)


class Work(Protocol):
    """A stage's work: built once per process, then called batch by batch."""

    def prepare(self) -> None:
        """Build the model (and whatever else the batches need); later calls do nothing."""

    def __call__(self, batch: Any) -> BatchResult: ...

    def close(self) -> None:
        """Release what `prepare` built."""


@dataclass(frozen=True)
class BackendSpec:
    """A backend by name, model and options: what `bpo.backends.get_backend` builds."""

    name: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Backend:
        from bpo.backends import get_backend

        return get_backend(self.name, model=self.model, **self.options)


@dataclass(frozen=True)
class StrategySpec:
    """A bootstrap strategy by name: what `bpo.bootstrap.strategies.make_strategy` builds.

    Args:
        name: the strategy.
        options: `make_strategy`'s keywords (distortion, sampling ...).
        backend: its model (None for cooccurrence).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    backend: BackendSpec | None = None


class StrategyWork:
    """Bootstrap: a batch of ``(sample, image)`` to each sample's negatives.

    Args:
        strategy: a strategy built here, or a `StrategySpec` that `prepare` builds.
        num_negatives, seed: as `bpo.bootstrap.runner.run_bootstrap` takes them.
    """

    def __init__(
        self, strategy: BootstrapStrategy | StrategySpec, *, num_negatives: int, seed: int
    ) -> None:
        self.spec = strategy if isinstance(strategy, StrategySpec) else None
        self.strategy: BootstrapStrategy | None = None if self.spec else strategy  # type: ignore[assignment]
        self.num_negatives = num_negatives
        self.seed = seed
        self._backend: Backend | None = None

    @property
    def builds_model(self) -> bool:
        """Whether `prepare` loads a model (which a Ray replica then does for itself)."""
        return self.strategy is None and self.spec is not None and self.spec.backend is not None

    @property
    def needs_image(self) -> bool:
        """Whether the driver must load each sample's image for the strategy."""
        if self.strategy is not None:
            return self.strategy.needs_image
        from bpo.bootstrap.strategies import IMAGE_STRATEGIES

        assert self.spec is not None
        return self.spec.name in IMAGE_STRATEGIES

    def prepare(self) -> None:
        if self.strategy is not None:
            return
        from bpo.bootstrap.strategies import make_strategy

        assert self.spec is not None
        if self.spec.backend is not None:
            self._backend = self.spec.backend.build()
        self.strategy = make_strategy(self.spec.name, backend=self._backend, **self.spec.options)

    def __call__(self, batch: Sequence[tuple[Sample, Image.Image | None]]) -> BatchResult:
        self.prepare()
        assert self.strategy is not None
        before = Counter(self.strategy.dropped)
        try:
            negatives = self.strategy.generate(
                batch, num_negatives=self.num_negatives, seed=self.seed
            )
        except BpoError as error:
            return BatchResult(error=error)
        return BatchResult(outputs=negatives, dropped=self.strategy.dropped - before)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __getstate__(self) -> dict[str, Any]:
        # A model built here never travels: a replica builds its own from the spec.
        state = dict(self.__dict__)
        if self._backend is not None:
            state.update(strategy=None, _backend=None)
        return state


class AnswerWork:
    """Evaluation: a batch of generation requests to their answers.

    Args:
        backend: a backend built here, or a `BackendSpec` that `prepare` builds.
    """

    def __init__(self, backend: Backend | BackendSpec) -> None:
        self.spec = backend if isinstance(backend, BackendSpec) else None
        self.backend: Backend | None = None if self.spec else backend  # type: ignore[assignment]
        self._own = False

    def prepare(self) -> None:
        if self.backend is None:
            assert self.spec is not None
            self.backend, self._own = self.spec.build(), True

    def __call__(self, batch: Sequence[GenerationRequest]) -> BatchResult:
        self.prepare()
        assert self.backend is not None
        try:
            return BatchResult(outputs=self.backend.generate(batch))
        except BpoError as error:
            return BatchResult(error=error)

    def close(self) -> None:
        if self._own and self.backend is not None:
            self.backend.close()
            self.backend, self._own = None, False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._own:
            state.update(backend=None, _own=False)
        return state
