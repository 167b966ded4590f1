"""Live mode stepped one bar at a time against the exchange simulator: ``run_live`` in a
thread, the simulator's clock advanced once a bar, each bar waited for. The loop the live
tests' ``drive`` and the parity replay share (each advances the clock its own way)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


def step_live(graph: Any, opts: Any, *, bars: int, advance: Callable[[], None],
              timeout: float, between: Callable[[int], None] | None = None) -> Any:
    """Run live with ``opts`` (``max_bars=bars``) in a thread; once it is ready, call
    ``advance()`` and wait for live mode to process that bar, ``bars`` times (``between(k)``
    after bar k). A failure of the run is raised here, not a timeout in its place."""
    from engine.live import run_live

    done: queue.Queue[int] = queue.Queue()
    ready = threading.Event()
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = run_live(graph, opts, on_bar=done.put, on_ready=ready.set)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            out["error"] = err
            ready.set()

    th = threading.Thread(target=target, daemon=True)
    th.start()
    assert ready.wait(timeout * 2), "live mode did not get ready"
    for k in range(bars):
        if "error" in out:
            break
        advance()
        try:
            done.get(timeout=timeout)
        except queue.Empty:
            th.join(1.0)
            if "error" in out:  # the run failed on this bar: its error, not the timeout
                raise out["error"] from None
            raise AssertionError(f"bar {k} was not processed in {timeout}s") from None
        if between is not None:
            between(k)
    th.join(timeout)
    assert not th.is_alive(), "live mode did not stop after max_bars"
    if "error" in out:
        raise out["error"]
    return out["result"]
