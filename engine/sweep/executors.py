"""Where a sweep's combinations run: in this process, in a local process pool, or on Ray.

The seam is :class:`Executor`: ``run(fn, shared, tasks, on_result)`` calls ``fn(shared, task)``
for every task and reports each result by the task's index; ``shared`` (the loaded market
and the computed features: megabytes) is handed to each worker once, not once per task.
Results are keyed by index, so their order, and so a sweep's output, does not depend on
which worker finished first or how many there were.

- :class:`LocalExecutor`: a loop in this process (``--workers 1``, or one combination).
- :class:`ProcessPoolExecutor`: ``concurrent.futures`` with the ``spawn`` start method
  (polars and numba keep thread pools that ``fork`` would copy in an undefined state); the
  shared payload is pickled once per worker through the pool's initializer.
- :class:`RayExecutor`: only when ``ray`` is importable (the ``engine[ray]`` extra): the
  payload goes to the object store once (``ray.put``), chunks of tasks run as Ray tasks
  reading it from there, and each chunk's results are reported as it ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from engine.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")

TaskFn = Callable[[Any, Any], Any]
OnResult = Callable[[int, Any], None]


class Executor(Protocol):
    """Runs ``fn(shared, task)`` over tasks; calls ``on_result(index, result)`` as each ends."""

    workers: int

    def run(self, fn: TaskFn, shared: Any, tasks: Sequence[Any], on_result: OnResult) -> None: ...


class LocalExecutor:
    """Every task in this process, in order."""

    workers = 1

    def run(self, fn: TaskFn, shared: Any, tasks: Sequence[Any], on_result: OnResult) -> None:
        for i, task in enumerate(tasks):
            on_result(i, fn(shared, task))


# -- process pool: the payload lives in a module global of each worker process
_WORKER_SHARED: Any = None


def _init_worker(shared: Any) -> None:
    global _WORKER_SHARED
    _WORKER_SHARED = shared


def _run_chunk(fn: TaskFn, chunk: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return [(i, fn(_WORKER_SHARED, task)) for i, task in chunk]


class ProcessPoolExecutor:
    """A local pool of ``workers`` processes (spawned), tasks sent in small chunks.

    ``fn`` must be a module-level function (it is pickled by reference).
    """

    def __init__(self, workers: int, *, chunk_size: int | None = None) -> None:
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.chunk_size = chunk_size

    def run(self, fn: TaskFn, shared: Any, tasks: Sequence[Any], on_result: OnResult) -> None:
        import concurrent.futures as cf
        import multiprocessing as mp

        n = len(tasks)
        if n == 0:
            return
        # small chunks keep the progress bar moving and the load balanced; a few per worker
        size = self.chunk_size or max(1, min(8, n // (self.workers * 4)))
        chunks = [list(enumerate(tasks))[i : i + size] for i in range(0, n, size)]
        with cf.ProcessPoolExecutor(
            max_workers=min(self.workers, len(chunks)),
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(shared,),
        ) as pool:
            futures = [pool.submit(_run_chunk, fn, chunk) for chunk in chunks]
            try:
                for fut in cf.as_completed(futures):
                    for i, result in fut.result():
                        on_result(i, result)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


class RayExecutor:
    """Chunks of tasks as Ray remote calls; the shared payload goes to the object store once.

    ``address``: the cluster to join (``ray.init(address=...)``: ``auto``, ``ray://host:10001``
    or ``host:6379``); None joins the one in ``RAY_ADDRESS``, or starts a local one. A Ray
    session already initialised in this process is used as it is. Each chunk's results come
    back as it ends (``ray.wait``), so the caller logs them while the others run. Needs
    ``pip install 'engine[ray]'``.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError(
                "--executor ray: the 'ray' package is not installed",
                hint="pip install 'engine[ray]', or use --executor process",
            ) from None
        self.workers = workers or 0
        self.address = address
        self.chunk_size = chunk_size

    def run(self, fn: TaskFn, shared: Any, tasks: Sequence[Any], on_result: OnResult) -> None:
        import ray

        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=self.workers or None, include_dashboard=False, log_to_driver=False
                )
        n = len(tasks)
        if n == 0:
            return
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = self.chunk_size or max(1, min(64, -(-n // (cpus * 4))))
        ref = ray.put(shared)
        remote = ray.remote(_ray_chunk)
        pending = {
            remote.remote(fn, ref, list(enumerate(tasks))[i : i + size]): i
            for i in range(0, n, size)
        }
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for d in done:
                    pending.pop(d)
                    for i, result in ray.get(d):
                        on_result(i, result)
        except BaseException:
            for p in pending:
                ray.cancel(p)
            raise


def _ray_chunk(fn: TaskFn, shared: Any, chunk: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return [(i, fn(shared, task)) for i, task in chunk]


EXECUTORS = ("process", "local", "ray")


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def make_executor(
    kind: str = "process", *, workers: int | None = None, tasks: int, address: str | None = None
) -> Executor:
    """The executor for ``--executor`` / ``--workers`` (a pool only when it can help)."""
    if kind not in EXECUTORS:
        raise UsageError(
            f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}",
            hint="process (default): a local process pool; local: this process; ray: a Ray cluster",
        )
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}", hint="e.g. --workers 2")
    if kind == "ray":
        return RayExecutor(workers, address=address)
    # Without --workers, run here: a worker process costs ~1.5 s to start (polars and numba
    # imports, the shared market pickled across), more than a grid of a hundred rule-strategy
    # combinations takes in one process (bench/sweep.py: 1.8 s local vs 3.5 s on a 2-process pool).
    n = 1 if workers is None else workers
    if kind == "local" or n == 1 or tasks <= 1:
        return LocalExecutor()
    return ProcessPoolExecutor(min(n, tasks))
