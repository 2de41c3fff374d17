"""Where a stage's batches run: in this process (``local``) or on a pool of Ray actors (``ray``).

A stage's work is a function of a batch of records (`bpo.engine.work`): the
bootstrap strategy on ``(sample, image)`` pairs, a benchmark's answering on
generation requests. The stage's driver reads its input, forms the batches,
writes the output and checks its settings (`bpo.provenance`) the same way for
both engines; only `run_batches` differs:

- ``local``: each batch is handed to the work in this process, in order.
- ``ray``: the same batches, formed by the same driver code, stream to a pool of
  Ray Data actors (`bpo.engine.ray_engine`), each of which builds the stage's
  backend once; results come back as they finish, in any order. The batches are
  the local engine's, so seeded sampling, which may depend on a batch's padding,
  gives the same texts.

Neither the engine nor the number of replicas (nor GPUs per replica, nor the
cluster's address) can change a record, so, like batch sizes and devices, they
stay out of a stage's settings: a run started on one engine may be resumed on
the other, or with more replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from bpo.engine.work import BatchResult, Work
from bpo.errors import ConfigError

ENGINES = ("local", "ray")

Key = TypeVar("Key")


@dataclass(frozen=True)
class EngineOptions:
    """Which engine runs a stage's batches, and with what.

    Args:
        engine: "local" or "ray".
        replicas: ray: actors running the work, each with its own backend.
        gpus_per_replica: ray: GPUs reserved for each actor (0: CPU only).
        ray_address: ray: "local" (start a cluster in this process, sized to the
            replicas), "auto" (the cluster `ray start --head` runs on this machine),
            or a cluster's address (``ray://HOST:10001``, ``HOST:6379``).
    """

    engine: str = "local"
    replicas: int = 1
    gpus_per_replica: float = 0.0
    ray_address: str = "local"

    def check(self) -> None:
        """Refuse options that cannot run, before anything is read or loaded."""
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; valid: {', '.join(ENGINES)}")
        if self.replicas < 1:
            raise ConfigError(f"--replicas {self.replicas}: need at least 1")
        if self.gpus_per_replica < 0:
            raise ConfigError(f"--gpus-per-replica {self.gpus_per_replica}: need 0 or more")
        if not self.ray_address:
            raise ConfigError("--ray-address is empty: give local, auto or a cluster address")
        if self.engine == "ray":
            from bpo.engine.ray_engine import require_ray

            require_ray()


LOCAL = EngineOptions()


def run_batches(
    work: Work, batches: Iterable[tuple[Key, Any]], engine: EngineOptions = LOCAL
) -> Iterator[tuple[Key, BatchResult]]:
    """Run `work` on each ``(key, batch)`` and yield ``(key, its result)``.

    `key` stays with the driver (the records to write the result for); only the
    batch travels. The local engine yields in order; the ray engine as batches
    finish. `batches` is consumed lazily, a few batches ahead of the results.
    """
    engine.check()
    if engine.engine == "ray":
        from bpo.engine.ray_engine import run_on_ray

        yield from run_on_ray(work, batches, engine)
        return
    work.prepare()
    for key, batch in batches:
        yield key, work(batch)


__all__ = ["ENGINES", "LOCAL", "BatchResult", "EngineOptions", "Work", "run_batches"]
