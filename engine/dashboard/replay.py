"""A finished run (backtest, sweep child or live) as dashboard state, from the run log.

:func:`run_state` reads the run's rows with :class:`engine.runlog.RunLog` (Parquet and SQLite
alike) into a :class:`~engine.dashboard.state.DashState` through the same converter live mode
uses (:meth:`DashState.add_rows`), plus the candles of the run's span from the data store its
params name (else the close prices its decisions logged, as flat candles). The page steps
through it with a time slider (``run.replay`` is true).
"""

from __future__ import annotations

import os
from typing import Any

from engine.dashboard.state import DashState
from engine.errors import EngineError, UsageError
from engine.runlog import RunLog

#: the tables the page reads, in the order they are loaded
REPLAY_TABLES = (
    "equity",
    "ensemble_decisions",
    "model_predictions",
    "orders",
    "trades",
    "system_events",
)
#: each table's time column (what a window filters and the rows are sorted by)
TIME = {
    "equity": "time",
    "system_events": "time",
    "orders": "updated_at",
    "trades": "exit_time",
    "ensemble_decisions": "open_time",
    "model_predictions": "open_time",
}
#: a replay shows at most this many bars (the last ones) unless --start/--end pick a span:
#: the page takes the whole span in one snapshot
MAX_BARS = 20_000


def run_state(
    run_id: str,
    *,
    results: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    start: int | None = None,
    end: int | None = None,
    max_bars: int = MAX_BARS,
) -> DashState:
    """The dashboard state of run ``run_id`` (a usage error naming recent runs if unknown)
    over the bars from ``start`` to ``end`` (UTC ms, inclusive), at most the last
    ``max_bars`` of them."""
    log = RunLog(results)
    try:
        run = log.get_run(run_id)
        if run is None:
            recent = ", ".join(r["run_id"] for r in log.recent_runs(5))
            raise UsageError(
                f"unknown run_id {run_id!r} in {log.sqlite_path}",
                hint=f"recent runs: {recent}"
                if recent
                else "the run log is empty: run `engine backtest ...` first",
            )
        st = DashState(cap=10**9)
        frames = {t: log.read(run_id, t) for t in REPLAY_TABLES}
    finally:
        log.close()
    params = run.get("params") or {}
    symbols = list(params.get("symbols") or sorted(set(frames["ensemble_decisions"]["symbol"])))
    span, notes = _window(frames, start, end, max_bars)
    for table in REPLAY_TABLES:
        f = frames[table]
        if span is not None and f.height:
            f = f.filter((f[TIME[table]] >= span[0]) & (f[TIME[table]] <= span[1]))
        st.add_rows(table, f.sort(TIME[table], nulls_last=True).to_dicts() if f.height else [])
    notes += _candles(st, symbols, params, frames["ensemble_decisions"], store, span)
    st.set(
        "run",
        {
            "run_id": run_id,
            "mode": run.get("mode"),
            "strategy": run.get("strategy"),
            "status": run.get("status"),
            "symbols": symbols,
            "interval": params.get("interval"),
            "replay": True,
            "notes": notes,
            "initial_equity": params.get("initial_equity") or _initial(run, params),
        },
    )
    return st


def _initial(run: dict[str, Any], params: dict[str, Any]) -> Any:
    cfg = params.get("config") or {}
    ex = cfg.get("execution") if isinstance(cfg, dict) else None
    if isinstance(ex, dict) and ex.get("initial_cash") is not None:
        return ex["initial_cash"]
    metrics = run.get("metrics") or {}
    return metrics.get("initial_equity")


def _window(
    frames: dict[str, Any], start: int | None, end: int | None, max_bars: int
) -> tuple[tuple[int, int] | None, list[str]]:
    """``(first, last)`` bar time to show (None: all of it), and a note when it is cut."""
    eq = frames["equity"]
    t = eq["time"] if eq.height else frames["ensemble_decisions"]["open_time"]
    times = sorted(set(t.to_list()))
    if start is None and end is None and len(times) <= max_bars:
        return None, []
    lo = start if start is not None else (times[0] if times else 0)
    hi = end if end is not None else (times[-1] if times else 0)
    inside = [x for x in times if lo <= x <= hi]
    notes = []
    if len(inside) > max_bars:
        lo = inside[-max_bars]
        notes.append(
            f"showing the last {max_bars} of {len(inside)} bars: --start/--end pick a span"
        )
    return (lo, hi), notes


def _candles(
    st: DashState,
    symbols: list[str],
    params: dict[str, Any],
    decisions: Any,
    store: str | os.PathLike[str] | None,
    span: tuple[int, int] | None,
) -> list[str]:
    """Candles of each symbol over the run's span; the notes say where they came from."""
    interval = params.get("interval")
    t = [r[0] for r in st.items["equity"]]
    start = params.get("start") if params.get("start") is not None else (min(t) if t else None)
    end = params.get("end") if params.get("end") is not None else (max(t) if t else None)
    if span is not None:
        start, end = span
    notes = []
    for sym in symbols:
        try:
            if not isinstance(interval, str):
                raise UsageError("the run's params name no interval")
            from engine.data import load_candles

            c = load_candles(
                sym,
                interval,
                start=start,
                end=end,
                store=store if store is not None else params.get("store"),
            )
            st.add_candles(
                sym,
                zip(
                    c["open_time"].to_list(),
                    c["open"].to_list(),
                    c["high"].to_list(),
                    c["low"].to_list(),
                    c["close"].to_list(),
                    strict=True,
                ),
            )
            continue
        except (EngineError, ImportError) as err:
            reason = getattr(err, "message", str(err))
        d = decisions.filter(decisions["symbol"] == sym).drop_nulls("price").sort("open_time")
        if span is not None:
            d = d.filter((d["open_time"] >= span[0]) & (d["open_time"] <= span[1]))
        st.add_candles(
            sym,
            (
                (a, p, p, p, p)
                for a, p in zip(d["open_time"].to_list(), d["price"].to_list(), strict=True)
            ),
        )
        notes.append(f"{sym}: candles not in the store ({reason}): decision close prices shown")
    return notes


def serve_run(
    run_id: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    token: str | None = None,
    results: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    on_ready: Any = None,
    start: int | None = None,
    end: int | None = None,
) -> None:
    """Serve the dashboard of finished run ``run_id`` until interrupted; ``on_ready(url)``
    once it listens (the URL holds no token)."""
    import asyncio

    from engine.dashboard.server import DashServer, check_bind

    check_bind(host, token, flag="--host")
    state = run_state(run_id, results=results, store=store, start=start, end=end)

    async def main() -> None:
        server = DashServer(state, token=token)
        try:
            bound = await server.serve(host, port)
        except OSError as err:
            raise UsageError(
                f"--port {port}: cannot serve on {host} ({err.strerror or err})",
                hint="pick another --port (0: any free port)",
            ) from None
        try:
            if on_ready is not None:
                on_ready(f"http://{host}:{bound}/")
            await asyncio.Event().wait()
        finally:
            await server.close()

    asyncio.run(main())
