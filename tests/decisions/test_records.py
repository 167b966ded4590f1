"""Live mode's row builder (:func:`table_rows`) against the backtest's frame builder
(:func:`table_frame`): the same rows, column for column, NULL for NULL."""

from __future__ import annotations

import numpy as np
import pytest

from engine.decisions.records import (
    OrderEvent,
    decision_columns,
    order_event_columns,
    table_frame,
    table_rows,
)
from engine.decisions.types import Decisions
from engine.runlog.schema import TABLES
from engine.sim.enums import Reason


def _same(table: str, cols: dict) -> list[dict]:  # type: ignore[type-arg]
    got = table_rows(table, cols)
    want = table_frame(table, cols).to_dicts()
    assert [list(r) for r in got] == [list(r) for r in want]  # schema order
    for g, w in zip(got, want, strict=True):
        for k in w:
            assert type(g[k]) is type(w[k]) and (g[k] == w[k] or g[k] is w[k] is None), (k, g[k], w[k])
    return got


def test_decision_rows_of_one_bar_equal_the_frames() -> None:
    n, S = 3, 2
    state = np.array([[1, 0], [-1, 1], [0, -1]], dtype=np.int8)
    prob = np.array([[0.61, np.nan], [0.2, 0.7], [np.nan, 0.4]])
    extra = {"p": prob, "agreement": np.array([[1.0, np.nan], [0.5, 1.0], [0.0, 0.25]]),
             "payoff": np.ones((n, S))}  # payoff is not a logged column: left out
    dec = Decisions(state=state, direction=state.astype(float), probability=prob,
                    confidence=np.where(np.isnan(prob), 1.0, prob), extra=extra)
    has = np.array([[True, False], [True, True], [True, True]])
    target = np.array([[0.5, 0.0], [0.0, 0.3], [0.0, 0.0]])
    reason = np.array([[0, 0], [int(Reason.BREAKER), 0], [0, int(Reason.EDGE)]])
    cols = decision_columns(("BTCUSDT", "ETHUSDT"), np.array([0, 300_000, 600_000]), has,
                            np.array([[100.0, 10.0], [101.0, 11.0], [99.0, np.nan]]), dec,
                            target, reason, np.array([1000.0, 0.0, 990.0]))
    rows = _same("ensemble_decisions", cols)
    assert len(rows) == 5
    assert rows[0]["probability"] == 0.61 and rows[2]["probability"] is None
    assert rows[1]["position_size"] is None  # zero equity: no size, NULL not NaN
    for k in range(3):  # one bar at a time (live) equals the whole grid (backtest)
        one = decision_columns(("BTCUSDT", "ETHUSDT"), np.array([k * 300_000]), has[k:k + 1],
                               np.array([[100.0, 10.0], [101.0, 11.0], [99.0, np.nan]])[k:k + 1],
                               Decisions(state=state[k:k + 1], direction=state[k:k + 1].astype(float),
                                         probability=prob[k:k + 1], confidence=dec.confidence[k:k + 1],
                                         extra={a: b[k:k + 1] for a, b in extra.items()}),
                               target[k:k + 1], reason[k:k + 1], np.array([1000.0, 0.0, 990.0])[k:k + 1])
        assert table_rows("ensemble_decisions", one) == [
            r for r in rows if r["open_time"] == k * 300_000]


def test_order_rows_equal_the_frames() -> None:
    ev = OrderEvent(client_order_id="e-abc-BTC-1-entry", symbol="BTCUSDT", side="buy",
                    type="market", quantity=0.002, status="new", created_at=5, open_time=0,
                    leg="entry", reduce_only=False, updated_at=5)
    done = ev.to("filled", 7, exchange_order_id="42", filled_quantity=0.002, avg_price=100.5,
                 price=float("nan"), message="ok")
    _same("orders", order_event_columns([ev, done]))


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_missing_columns_and_nan_are_null(table: str) -> None:
    cols = [c for c in TABLES[table] if c.name != "run_id"]
    sample = {"f64": [1.5, float("nan"), None], "i64": [3, None, -1], "str": ["a", None, "c"],
              "bool": [True, False, None], "json": ['{"a": 1}', None, "[]"]}
    given = {c.name: sample[c.type] for c in cols[::2]}  # every other column given
    _same(table, given)
    with pytest.raises(ValueError, match="no such column"):
        table_rows(table, {"nope": [1]})


def test_integers_given_as_floats_with_nan_are_null_there() -> None:
    cols = {"symbol": ["BTCUSDT"] * 3, "open_time": np.array([0, 1, 2]), "model": ["m"] * 3,
            "model_version": ["v"] * 3, "probability": np.array([0.1, np.nan, 0.7]),
            "label": np.array([1.0, np.nan, 0.0])}  # labels: 0/1, NaN where not known yet
    rows = _same("model_predictions", cols)
    assert [r["label"] for r in rows] == [1, None, 0]


@pytest.mark.parametrize("n", [4, 5000])  # live's few rows, a backtest's many (polars columns)
def test_prediction_rows_equal_the_frame(n: int) -> None:
    from types import SimpleNamespace

    from engine.decisions.ml_slot import prediction_columns, predictions_frame

    rng = np.random.default_rng(1)
    raw = rng.uniform(size=(n, 2))
    raw[::4, 0] = np.nan  # the first model abstains there: no row; the remote one logs NULL
    r = SimpleNamespace(
        symbol="ETHUSDT", open_time=np.arange(n, dtype=np.int64) * 300_000,
        model_names=["lightgbm", "remote"], fold=np.where(np.arange(n) < 1, -1, np.arange(n) % 2),
        versions={"lightgbm": ["l0", "l1"], "remote": ["r0", None]}, raw=raw,
        probs=raw * 0.9, weights=rng.uniform(size=(n, 2)),
        labels=np.where(np.arange(n) % 3 == 0, np.nan, np.arange(n) % 2).astype(float))
    endpoints = {"remote": "http://127.0.0.1:8765"}
    want = predictions_frame(r, endpoints).to_dicts()
    got = [row for cols in prediction_columns(r, endpoints)
           for row in table_rows("model_predictions", cols)]
    assert got == [{k: (None if isinstance(v, float) and v != v else v) for k, v in w.items()}
                   for w in want]
    assert len(got) == sum(1 for w in want) and any(g["label"] is None for g in got)
