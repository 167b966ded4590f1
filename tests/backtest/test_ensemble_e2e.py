"""The ML slot end to end: ``engine backtest`` on a small ensemble config, then ``engine query``.

The config keeps strategies/ensemble.yaml's structure (both symbols, 5m with 15m features and
funding, the four models, Bayesian fusion with the gate, fractional Kelly and the breaker) on
four weeks of data with tiny models and three folds.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SYMBOLS = ("BTCUSDT", "ETHUSDT")
MODELS = ("lightgbm", "xgboost", "prophet", "mlp")

CONFIG = """\
name: ensemble_small
description: strategies/ensemble.yaml's graph, four weeks, tiny models, three folds.
data:
  symbols: [BTCUSDT, ETHUSDT]
  interval: 5m
  start: 2023-03-01
  end: 2023-03-27T23:55
  market: usdm
  funding: true
  higher_timeframes: [15m]
features: [rsi_14, bb_pct, atr_pct_14, log_return_1, volume_ratio, rsi_14_15m, funding_rate]
labels: {horizon: 6, cost_bps: 10, flat_band_bps: 0, drop_flat: true}
training:
  train_window: 7d
  retrain_every: 6d
  embargo: 1h
  warmup: 9d
  row_stride: 2
  min_train_rows: 300
  seed: 7
  threads: 1
  workers: 1
models:
  - {kind: lightgbm, name: lightgbm, params: {n_estimators: 20, num_leaves: 7, min_data_in_leaf: 50}}
  - {kind: xgboost, name: xgboost, params: {n_estimators: 20, max_depth: 3}}
  - {kind: prophet, name: prophet, params: {window: 5d, n_changepoints: 5}}
  - {kind: mlp, name: mlp, params: {hidden_layer_sizes: [8], max_iter: 10}}
ensemble:
  calibration: isotonic
  fusion: bayesian
  payoff_lookback: 288
  min_calibration_rows: 200
  reliability_halflife: 576
  gate: {max_uncertainty: 0.999, min_agreement: 0.5, min_edge: 0.0}
risk:
  sizing: kelly
  kelly_fraction: 0.25
  max_position_pct: 50
  max_leverage: 2
  max_exposure_pct: 100
  breaker: {daily_loss_pct: 5, drawdown_pct: 25, max_consecutive_losses: 8, cooldown_bars: 288}
execution:
  order_type: market
  leverage: 2
  margin_mode: cross
  taker_fee: 0.0005
  maker_fee: 0.0002
  slippage_bps: 1
  initial_cash: 10000
"""


def engine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=300
    )


def query(sql: str, results: Path) -> list[dict[str, object]]:
    out = engine("query", sql, "--format", "json", "--results", str(results))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert isinstance(rows, list)
    return rows


@pytest.fixture(scope="module")
def runs(usdm_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Two identical ``engine backtest --json`` runs into one results folder."""
    tmp = tmp_path_factory.mktemp("ensemble_e2e")
    cfg = tmp / "ensemble_small.yaml"
    cfg.write_text(CONFIG)
    results = tmp / "results"
    docs = []
    for _ in range(2):
        out = engine(
            "backtest", str(cfg), "--json", "--store", str(usdm_store), "--results", str(results)
        )
        assert out.returncode == 0, out.stderr[-3000:]
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 1, out.stdout[-2000:]  # exactly one JSON object on stdout
        docs.append(json.loads(lines[0]))
    return results, docs


def test_predictions_from_all_models_and_decisions_for_both_symbols(runs) -> None:  # type: ignore[no-untyped-def]
    results, docs = runs
    rid = docs[0]["run_id"]
    rows = query(
        "SELECT symbol, model, count(*) AS n, count(probability) AS p, "
        "count(DISTINCT model_version) AS versions FROM model_predictions "
        f"WHERE run_id = '{rid}' GROUP BY symbol, model ORDER BY symbol, model",
        results,
    )
    got = {(r["symbol"], r["model"]): r for r in rows}
    assert set(got) == {(s, m) for s in SYMBOLS for m in MODELS}
    for key, r in got.items():
        assert r["p"] > 1000, key  # thousands of bars predicted per model and symbol
        assert r["versions"] == 3, key  # one version per fold
    dec = query(
        "SELECT symbol, count(*) AS n, count(DISTINCT action) AS actions FROM ensemble_decisions "
        f"WHERE run_id = '{rid}' GROUP BY symbol ORDER BY symbol",
        results,
    )
    assert [r["symbol"] for r in dec] == list(SYMBOLS)
    assert all(r["n"] == 27 * 288 and r["actions"] >= 2 for r in dec)
    # ensemble_decisions.probability is the fused P(up) (below 1/2 when the ensemble leans
    # down), confidence the chosen side's probability max(p, 1 - p)
    (row,) = query(
        "SELECT min(probability) AS lo, max(probability) AS hi, "
        "max(abs(confidence - greatest(probability, 1 - probability))) AS diff "
        f"FROM ensemble_decisions WHERE run_id = '{rid}' AND probability IS NOT NULL",
        results,
    )
    assert row["lo"] < 0.5 < row["hi"] and row["diff"] < 1e-12


def test_model_metrics_in_the_run(runs) -> None:  # type: ignore[no-untyped-def]
    results, docs = runs
    models = docs[0]["metrics"]["models"]
    assert set(MODELS) | {"ensemble"} <= set(models)
    for name in (*MODELS, "ensemble"):
        m = models[name]
        assert m["n"] > 1000
        for key in ("auc", "log_loss", "brier", "calibration_error"):
            assert isinstance(m[key], float) and math.isfinite(m[key]), (name, key)
        assert 0.0 <= m["auc"] <= 1.0 and 0.0 <= m["brier"] <= 1.0
        assert m["calibration_curve"] and all(b["count"] > 0 for b in m["calibration_curve"])
        assert sum(b["count"] for b in m["calibration_curve"]) == m["n"]
        assert set(m["per_symbol"]) == set(SYMBOLS)
    # the members' skill weights and the base rate's share make up the whole pool
    weights = [models[n]["weight"] for n in (*MODELS, "base_rate")]
    assert all(0.0 <= w <= 1.0 for w in weights) and sum(weights) == pytest.approx(1.0)
    # the same document is what runs.metrics holds
    rid = docs[0]["run_id"]
    row = query(f"SELECT metrics FROM runs WHERE run_id = '{rid}'", results)[0]
    stored = row["metrics"] if isinstance(row["metrics"], dict) else json.loads(row["metrics"])
    assert stored["models"] == json.loads(json.dumps(models))


def test_second_run_gives_identical_decisions(runs) -> None:  # type: ignore[no-untyped-def]
    results, docs = runs
    a, b = (d["run_id"] for d in docs)
    assert a != b
    assert docs[1]["metrics"]["ml"]["models_fitted"] == 0  # every version reused
    assert docs[0]["metrics"]["ml"]["models_fitted"] == 2 * 3 * 4
    cols = "symbol, open_time, action, probability, agreement, uncertainty, expected_value"
    for table, cols_ in (
        ("ensemble_decisions", cols),
        ("model_predictions", "symbol, open_time, model, model_version, probability, calibrated"),
    ):
        q = f"SELECT {cols_} FROM {table} WHERE run_id = '{{}}' ORDER BY ALL"
        assert query(q.format(a), results) == query(q.format(b), results), table
    ma = {k: v for k, v in docs[0]["metrics"].items() if k != "ml"}
    mb = {k: v for k, v in docs[1]["metrics"].items() if k != "ml"}
    assert ma == mb


def test_summary_table_shows_the_models(runs, usdm_store: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without --json the summary adds the per-model table (a rerun: nothing is trained)."""
    results, _ = runs
    cfg = tmp_path / "ensemble_small.yaml"
    cfg.write_text(CONFIG)
    out = engine("backtest", str(cfg), "--store", str(usdm_store), "--results", str(results))
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "Models: walk-forward, out-of-fold (0 versions fitted, 24 reused)" in text
    for head in ("AUC", "Log loss", "Brier", "ECE", "Contribution"):
        assert head in text, head
    for name in (*MODELS, "ensemble"):
        assert re.search(rf"{name}\s*│\s*0\.\d{{3}}\s*│", text), name


def test_report_shows_models_in_chromium(runs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """engine report of the ensemble run: per-model metrics, calibration curve, contributions,
    drawn by a real headless Chromium with the network blocked."""
    results, docs = runs
    rid = docs[0]["run_id"]
    page = tmp_path / "report.html"
    out = engine("report", rid, "--results", str(results), "--out", str(page))
    assert out.returncode == 0, out.stderr[-3000:]
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium (scripts/test installs it)")
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--proxy-server=http://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    dom = html.unescape(got.stdout)
    assert "Uncaught" not in got.stderr, got.stderr[-2000:]
    for div in ("calibration", "contribution"):
        assert re.search(rf'<div id="{div}"[^>]*class="[^"]*js-plotly-plot', dom), div
    assert "Walk-forward metrics reported by training (runs.metrics['models'])" in dom
    assert "Calibration curve" in dom and "Model contributions" in dom
    stored = docs[0]["metrics"]["models"]
    # the stored walk-forward table: one row per model with its AUC (4 decimals on the page)
    section = dom.split("Walk-forward metrics reported by training", 1)[1].split("</table>", 1)[0]
    for name in (*MODELS, "ensemble"):
        row = re.search(rf"<tr><td[^>]*>{name}</td>(.*?)</tr>", section)
        assert row, name
        assert f"{stored[name]['auc']:.4f}" in row.group(1), name
    # scored from the log (fused P(up) vs realised labels) the ensemble agrees with training's
    logged = dom.split("Out-of-sample over this run", 1)[1].split("</table>", 1)[0]
    row = re.search(r"<tr><td[^>]*>ensemble</td>(.*?)</tr>", logged)
    assert row and f"{stored['ensemble']['auc']:.4f}" in row.group(1)
    # the calibration figure has one trace per model and the ensemble
    for name in (*MODELS, "ensemble"):
        assert name in dom.split('id="calibration"', 1)[1], name
