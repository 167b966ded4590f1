"""Build the committed results folder of run-log schema version 1, and pin each version's columns.

    python tests/runlog/make_fixtures.py             # rebuild fixtures/results_v1/
    python tests/runlog/make_fixtures.py --snapshot  # write fixtures/schema_v<VERSION>.json

``results_v1/`` is what the engine wrote before the run log stored a schema version: a
``runlog.sqlite`` in WAL mode with ``PRAGMA user_version = 0`` and the DDL of that time, one
finished live run appended to it, and one finished backtest under ``runs/<run_id>/`` as Parquet.
It is built from ``fixtures/schema_v1.json`` with plain ``sqlite3`` and polars, not with
``engine.runlog``, so it stays version 1 whatever the engine's schema becomes. Tests copy it
before opening it (opening migrates it).

``schema_v<N>.json`` records the columns of schema version N; ``test_migrate.py`` checks that the
engine's columns equal the snapshot of ``schema.VERSION``, so a column change without a version
bump fails. After a bump, run ``--snapshot`` once and commit the new file (never edit an old
one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
RESULTS_V1 = FIXTURES / "results_v1"
BACKTEST_ID = "20240101T000000Z-ema_cross-0a0a0a"
LIVE_ID = "20240102T000000Z-ema_cross-0b0b0b"
HOST = "fixture-host"  # not this machine: crash recovery never touches these runs
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
BAR = 300_000

_SQLITE = {"str": "TEXT", "i64": "INTEGER", "f64": "REAL", "bool": "INTEGER", "json": "TEXT"}


def schema_columns(version: int) -> dict[str, list[list[str]]]:
    """``{table: [[column, logical type], ...]}`` of one schema version (from its snapshot)."""
    return json.loads((FIXTURES / f"schema_v{version}.json").read_text())


def write_snapshot() -> Path:
    """Write ``schema_v<VERSION>.json`` from the engine's current schema."""
    from engine.runlog import schema

    path = FIXTURES / f"schema_v{schema.VERSION}.json"
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema.describe(), indent=1) + "\n")
    return path


def _backtest_rows() -> dict[str, list[dict[str, Any]]]:
    times = [T0 + i * BAR for i in range(3)]
    return {
        "ensemble_decisions": [
            {"symbol": "BTCUSDT", "open_time": t, "action": a, "target_position": q, "price": p}
            for t, a, q, p in zip(
                times,
                ["flat", "long", "long"],
                [0.0, 0.01, 0.01],
                [42000.5, 42010.0, 42100.0],
                strict=True,
            )
        ],
        "model_predictions": [
            {"symbol": "BTCUSDT", "open_time": t, "model": "lightgbm", "probability": p, "label": y}
            for t, p, y in zip(times, [0.48, 0.61, 0.57], [1, 0, None], strict=True)
        ],
        "orders": [
            {
                "client_order_id": "bt-entry-1",
                "symbol": "BTCUSDT",
                "side": "buy",
                "type": "market",
                "quantity": 0.01,
                "price": 42010.0,
                "status": "filled",
                "created_at": times[1] + BAR,
                "open_time": times[1],
                "leg": "entry",
                "filled_quantity": 0.01,
                "avg_price": 42010.0,
                "reduce_only": False,
            }
        ],
        "equity": [
            {"time": t, "equity": e, "cash": 1000.0, "exposure": x}
            for t, e, x in zip(times, [1000.0, 1000.0, 1000.9], [0.0, 420.1, 421.0], strict=True)
        ],
    }


def _live_rows() -> dict[str, list[dict[str, Any]]]:
    t = T0 + 86_400_000
    order = {
        "client_order_id": "live-entry-1",
        "symbol": "ETHUSDT",
        "side": "sell",
        "type": "market",
        "quantity": 0.5,
        "created_at": t + BAR + 10,
        "open_time": t,
        "leg": "entry",
        "reduce_only": False,
    }
    return {
        "ensemble_decisions": [
            {"symbol": "ETHUSDT", "open_time": t, "action": "short", "target_position": -0.5},
            {"symbol": "ETHUSDT", "open_time": t + BAR, "action": "flat", "target_position": 0.0},
        ],
        "model_predictions": [
            {
                "symbol": "ETHUSDT",
                "open_time": t,
                "model": "lightgbm",
                "probability": 0.3,
                "label": 0,
            },
        ],
        "orders": [
            {**order, "status": "new", "updated_at": t + BAR + 10},
            {
                **order,
                "status": "filled",
                "exchange_order_id": "8389765",
                "filled_quantity": 0.5,
                "avg_price": 2351.25,
                "updated_at": t + BAR + 60,
            },
        ],
        "equity": [{"time": t, "equity": 500.0, "cash": 500.0}],
        "system_events": [
            {
                "time": t + 5,
                "severity": "info",
                "component": "stream",
                "message": "connected",
                "data": '{"url":"wss://fstream.binance.com"}',
            }
        ],
    }


def _run_row(run_id: str, mode: str, status: str, started: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "mode": mode,
        "strategy": "ema_cross",
        "strategy_hash": "3f2a1c",
        "started_at": started,
        "finished_at": started + 60_000,
        "status": status,
        "params": '{"symbols":["BTCUSDT"],"interval":"5m"}',
        "metrics": '{"total_return":0.0009}',
        "engine_version": "0.1.0",
        "host": HOST,
        "pid": 4242,
    }


def _write_sqlite(path: Path, cols: dict[str, list[list[str]]]) -> None:
    """The SQLite file as the unversioned engine made it: its DDL, WAL, user_version 0."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 512")  # a small file: one page per table and index
    conn.execute("PRAGMA journal_mode=WAL")
    with conn:
        for table, tcols in cols.items():
            body = ", ".join(f'"{n}" {_SQLITE[t]}' for n, t in tcols)
            key = ", PRIMARY KEY (run_id)" if table == "runs" else ""
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({body}{key})')
            if table != "runs":
                conn.execute(f'CREATE INDEX IF NOT EXISTS "ix_{table}_run" ON "{table}" (run_id)')
        runs = [
            _run_row(BACKTEST_ID, "backtest", "ok", T0),
            _run_row(LIVE_ID, "live", "stopped", T0 + 86_400_000),
        ]
        tables: dict[str, list[dict[str, Any]]] = {"runs": runs}
        for table, rows in _live_rows().items():
            tables[table] = [{"run_id": LIVE_ID, **r} for r in rows]
        for table, rows in tables.items():
            names = [n for n, _ in cols[table]]
            quoted = ", ".join(f'"{n}"' for n in names)
            conn.executemany(
                f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join("?" * len(names))})',
                [[r.get(n) for n in names] for r in rows],
            )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _write_parquet(run_dir: Path, cols: dict[str, list[list[str]]]) -> None:
    import polars as pl

    types = {"str": pl.Utf8, "i64": pl.Int64, "f64": pl.Float64, "bool": pl.Boolean}
    types["json"] = pl.Utf8
    run_dir.mkdir(parents=True)
    for table, rows in _backtest_rows().items():
        schema = {n: types[t] for n, t in cols[table]}
        frame = pl.DataFrame(
            [{n: (BACKTEST_ID if n == "run_id" else r.get(n)) for n in schema} for r in rows],
            schema=schema,
            orient="row",
        )
        frame.write_parquet(run_dir / f"{table}.parquet", compression="zstd", statistics=True)


def build_results_v1(out: Path = RESULTS_V1) -> Path:
    """Write the version-1 results folder to ``out`` (replacing it)."""
    cols = schema_columns(1)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _write_sqlite(out / "runlog.sqlite", cols)
    _write_parquet(out / "runs" / BACKTEST_ID, cols)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--snapshot", action="store_true", help="write schema_v<VERSION>.json")
    args = parser.parse_args()
    if args.snapshot:
        print(write_snapshot())
        return
    out = build_results_v1()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>7}  {p.relative_to(HERE)}")


if __name__ == "__main__":
    main()
