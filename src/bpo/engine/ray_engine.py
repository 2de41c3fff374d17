"""The ray engine: a stage's batches on a pool of Ray Data actors, results streamed back.

The pipeline is Ray Data's batch-inference shape, read -> map_batches:

- read: one read task takes the driver's batches from a bounded `ray.util.queue.Queue`
  as the driver forms them (the input streams; nothing is read ahead of what the pool
  can take). Each row is one whole batch of the local engine, pickled, with its index.
- map_batches: ``Replica`` actors (``ActorPoolStrategy(size=replicas)``, ``num_gpus``
  each), each holding the stage's work object, which builds its backend once per
  actor. Ray Data restarts an actor that dies and retries its batch on another
  (its defaults for actor pools: ``max_restarts=-1``, ``max_task_retries=-1``).
- the driver iterates the results and hands them back by index; a batch retried
  after a lost result could come back twice, so each index is yielded once.

The read task takes no CPU (it only waits on the queue), so a cluster of N CPUs runs
N replicas. Ray Data merges small blocks up to ``target_max_block_size`` before
passing them on; with one row per block that would hold the whole input back, so the
limit is lowered to one byte for this pipeline.
"""

from __future__ import annotations

import pickle
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from bpo.engine.work import BatchResult, Work
from bpo.errors import ConfigError

if TYPE_CHECKING:
    from bpo.engine import EngineOptions

Key = TypeVar("Key")

_END = None  # what the driver puts in the queue after its last batch


def require_ray() -> Any:
    """Ray, or a ConfigError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'bpo[ray]'") from None
    return ray


def connect(options: EngineOptions) -> bool:
    """Join (or start) the cluster `options` name; True when this call started Ray here.

    A Ray already initialized in this process (by a caller of `bpo.bootstrap(...)`,
    or a test) is used as it is.
    """
    import logging

    from bpo import console

    ray = require_ray()
    if console.level() < console.VERBOSE:
        # One bar per stage: Ray's own logs only when they are errors, unless asked for
        # with --verbose. The replicas' output stays in Ray's log files.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "include_dashboard": False}
    if console.level() == console.VERBOSE:
        quiet = {"include_dashboard": False}
    try:
        if options.ray_address == "local":
            ray.init(num_cpus=options.replicas, **quiet)
        else:
            ray.init(address=options.ray_address, **quiet)
    except ConnectionError as error:
        raise ConfigError(
            f"--ray-address {options.ray_address}: cannot join the cluster ({error}); "
            "start one with `ray start --head`, or use --ray-address local"
        ) from None
    return True


def _check_gpus(options: EngineOptions) -> None:
    import ray

    if options.gpus_per_replica <= 0:
        return
    present = ray.cluster_resources().get("GPU", 0)
    needed = options.gpus_per_replica * options.replicas
    if present < needed:
        raise ConfigError(
            f"--replicas {options.replicas} --gpus-per-replica {options.gpus_per_replica:g} "
            f"need {needed:g} GPUs; the cluster has {present:g}"
        )


class Replica:
    """One actor of the pool: holds the work (its model built once) and runs batch rows."""

    def __init__(self, work: Work) -> None:
        from bpo.errors import BpoError

        self.work = work
        self.failure: BpoError | None = None
        try:
            work.prepare()
        except BpoError as error:  # reported by the driver, with the first batch
            self.failure = error

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        results = []
        for payload in rows["batch"]:
            if self.failure is not None:
                result = BatchResult(error=self.failure)
            else:
                result = self.work(pickle.loads(payload))
            results.append(pickle.dumps(result))
        return {"index": rows["index"], "result": results}


def _queue_source(feed: Any) -> Any:
    """A Ray Data datasource whose one read task yields the rows put in `feed`."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class QueueSource(Datasource):
        def estimate_inmemory_data_size(self) -> None:
            return None

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[ReadTask]:
            def read() -> Iterator[Any]:
                while (row := feed.get()) is not _END:
                    index, payload = row
                    yield pa.table({"index": [index], "batch": [payload]})

            metadata = BlockMetadata(
                num_rows=None, size_bytes=None, input_files=None, exec_stats=None
            )
            return [ReadTask(read, metadata)]

    return QueueSource()


def run_on_ray(
    work: Work, batches: Iterable[tuple[Key, Any]], options: EngineOptions
) -> Iterator[tuple[Key, BatchResult]]:
    """`bpo.engine.run_batches` on a Ray Data actor pool (see the module docstring)."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext
    from ray.util.queue import Queue

    started = connect(options)
    exhausted, feed = False, None
    context = DataContext.get_current()
    saved = context.target_max_block_size, context.enable_progress_bars
    try:
        _check_gpus(options)
        window = 2 * options.replicas + 2  # batches in flight: every replica busy, one queued
        feed = Queue(maxsize=window + 1)
        context.target_max_block_size, context.enable_progress_bars = 1, False
        dataset = ray.data.read_datasource(_queue_source(feed), num_cpus=0).map_batches(
            Replica,
            fn_constructor_args=(work,),
            compute=ActorPoolStrategy(size=options.replicas),
            num_gpus=options.gpus_per_replica or None,
            batch_size=1,
        )
        results: queue.Queue[Any] = queue.Queue()

        def collect() -> None:  # the blocking iteration, off the driver's thread
            try:
                for row in dataset.iter_rows():
                    results.put((int(row["index"]), pickle.loads(row["result"])))
            except BaseException as error:
                results.put(error)
            results.put(_END)

        threading.Thread(target=collect, daemon=True, name="bpo-ray-results").start()
        keys: dict[int, Key] = {}
        inputs = iter(enumerate(batches))
        while True:
            while not exhausted and len(keys) < window:
                item = next(inputs, None)
                if item is None:
                    exhausted = True
                    feed.put(_END)
                    break
                index, (key, batch) = item
                keys[index] = key
                feed.put((index, pickle.dumps(batch)))
            if exhausted and not keys:
                return
            got = results.get()
            if got is _END:
                raise RuntimeError(f"Ray Data ended with {len(keys)} batches unanswered")
            if isinstance(got, BaseException):
                raise got
            index, result = got
            if index in keys:  # a batch retried after its result came back is not yielded twice
                yield keys.pop(index), result
    finally:
        # Stopped early (an error, --on-error raise): let the read task end. The feed
        # has room, as it never holds more than the batches in flight.
        if feed is not None and not exhausted:
            feed.put(_END)
        context.target_max_block_size, context.enable_progress_bars = saved
        if started:
            ray.shutdown()
