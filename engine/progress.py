"""The one progress protocol: library code reports, only the CLI draws.

A long job (a download, an import, training folds, a backtest's steps, a sweep) takes an
optional ``progress`` argument and calls it as ``progress(task, done, total)``:

* ``task``: what is being done now, for a label (``"training folds"``, ``"BTCUSDT-5m-2024-01.zip"``);
* ``done``: units finished so far in this task (0 when it starts);
* ``total``: units in the task, or None when unknown.

The CLI passes a callable that drives a rich progress bar (:mod:`engine.cli.common`);
library callers and tests pass nothing (:func:`silent`) or a list's ``append`` to record it.

>>> seen = []
>>> report = lambda task, done, total: seen.append((task, done, total))
>>> step(report, "simulate", 2, 5)
>>> seen
[('simulate', 2, 5)]
>>> step(None, "simulate", 3, 5)  # no progress wanted: nothing happens
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """``progress(task, done, total)``: see the module docstring."""

    def __call__(self, task: str, done: int, total: int | None) -> None: ...


def silent(task: str, done: int, total: int | None) -> None:
    """A :class:`Progress` that reports nowhere."""


def step(progress: Progress | None, task: str, done: int, total: int | None) -> None:
    """Report to ``progress`` when one was given."""
    if progress is not None:
        progress(task, done, total)
