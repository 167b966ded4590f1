"""Where walk-forward fold fits run: ``training.executor: local`` (this process, or a process
pool with ``training.workers > 1``) or ``ray`` (each fold fit a Ray task).

:class:`RayFoldExecutor` implements :class:`engine.ml.walkforward.FoldExecutor`: it joins the
Ray cluster of ``RAY_ADDRESS`` (or uses a session already initialised in this process, or
starts a local one), sends each fit as a task (its training set travels with it; the fitted
model is written by the task to ``results/models/<version>`` as on one machine, so the
results folder must be shared storage on a multi-machine cluster) and reports each result as
it ends. The fits are the same functions, so the versions and predictions are those of a
local run. Needs ``pip install 'engine[ray]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from engine.errors import ConfigError
from engine.ml.walkforward import FoldExecutor, default_executor

T = TypeVar("T")
R = TypeVar("R")


class RayFoldExecutor:
    """Fold fits as Ray tasks, ``threads`` CPUs each."""

    def __init__(self, *, threads: int = 1, address: str | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(
                "training.executor: ray needs the 'ray' package",
                hint="pip install 'engine[ray]', or set training.executor: local",
            ) from None
        self.threads = threads
        self.address = address

    def map(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        *,
        on_done: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        import ray

        if not tasks:
            return []
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(num_cpus=self.threads)(fn)
        pending = {remote.remote(t): i for i, t in enumerate(tasks)}
        results: list[Any] = [None] * len(tasks)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    results[i] = ray.get(ref)
                    if on_done is not None:
                        on_done(i, results[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return results


def make_fold_executor(training: Any) -> FoldExecutor:
    """The executor ``training`` asks for (``executor``: local or ray; ``workers``, ``threads``)."""
    if getattr(training, "executor", "local") == "ray":
        return RayFoldExecutor(threads=training.threads)
    return default_executor(training.workers)
