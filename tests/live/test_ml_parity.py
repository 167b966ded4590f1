"""Live ML: a small walk-forward ensemble (LightGBM + MLP, two folds, Kelly sizing) run live
against the exchange simulator decides, predicts and fills exactly as the backtest over the
same real bars, reusing the backtest's models (same model versions)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.backtest import run_backtest
from engine.cli import app
from engine.exchange_sim.market import MarketData
from engine.live import warmup_needed
from engine.timeutil import parse_end

from .conftest import BAR, SYMBOLS, drive, ms, simulator, strategy
from .parity import compare_runs, q
from .test_parity import live_span

pytestmark = pytest.mark.slow

START = "2024-01-01"  # the backtest's first bar = the live warm-up's first bar (the anchor)
FIRST_LIVE = "2024-01-06T20:00"  # START + training.warmup (140h): fold 0's cutoff
N_BARS = 150  # folds 0, 1, 2 (cutoffs every 6 h = 72 bars) are all rolled in live

ML_STRATEGY = """
name: ml_small
data:
  symbols: [BTCUSDT, ETHUSDT]
  interval: 5m
  start: {start}
  end: {end}
  market: usdm
  funding: true
features: [rsi_14, bb_pct, atr_pct_14, log_return_1, volume_ratio]
labels: {{horizon: 6, cost_bps: 2, flat_band_bps: 0, drop_flat: true}}
training:
  train_window: 3d
  retrain_every: 6h
  warmup: 140h
  embargo: 2
  min_train_rows: 200
  seed: 3
  threads: 1
  workers: 1
models:
  - {{kind: lightgbm, name: lightgbm, params: {{n_estimators: 15, num_leaves: 7, min_data_in_leaf: 20}}}}
  - {{kind: mlp, name: mlp, params: {{hidden_layer_sizes: [8], max_iter: 15}}}}
ensemble:
  calibration: none
  fusion: bayesian
  payoff_lookback: 200
  min_calibration_rows: 40
  min_skill_labels: 12
  trade_cost_bps: 0
  gate: {{max_uncertainty: 0.9999, min_agreement: 0.5, min_edge: 0.0}}
risk:
  sizing: kelly
  kelly_fraction: 0.5
  max_position_pct: 50
  max_leverage: 2
  max_exposure_pct: 100
execution:
  order_type: market
  leverage: 2
  margin_mode: cross
  taker_fee: 0.0005
  maker_fee: 0.0002
  slippage_bps: 1
  initial_cash: 10000
"""


@pytest.fixture(scope="module")
def ml_market(usdm_store: Path) -> MarketData:
    md, _ = MarketData.load(list(SYMBOLS), interval="5m", start_ms=ms(START),
                            end_ms=parse_end("2024-01-07T12:00"), store=usdm_store)
    return md


def predictions(run_id: str, since: int, until: int, results: Path) -> list[tuple[Any, ...]]:
    rows = q(
        # the label is realised later: a backtest knows it, a live bar's close does not;
        # latency_ms is live's own measure (NULL in a backtest): checked apart
        f"SELECT * EXCLUDE (run_id, label, latency_ms) "
        f"FROM predictions WHERE run_id = '{run_id}' AND open_time BETWEEN {since} AND {until} "
        f"ORDER BY open_time, symbol, model", results)
    return [tuple(r.values()) for r in rows]


def _same_predictions(live_id: str, bt_id: str, first_live: int, last: int, results: Path) -> None:
    """Every model's prediction of every live bar is the backtest's; live also times each."""
    p_live = predictions(live_id, first_live, last, results)
    p_bt = predictions(bt_id, first_live, last, results)
    assert len(p_live) == len(p_bt) == 2 * 2 * N_BARS
    assert p_live == p_bt
    lat = q(f"SELECT count(*) AS n, count(latency_ms) AS live, min(latency_ms) AS lo FROM predictions "
            f"WHERE run_id IN ('{live_id}', '{bt_id}') GROUP BY run_id = '{live_id}' "
            f"ORDER BY run_id = '{live_id}'", results)
    assert lat[0]["live"] == 0 and lat[1]["live"] == lat[1]["n"] and lat[1]["lo"] > 0, lat
    # three folds per symbol and model, each rolled in live on the backtest's model version
    versions = {(r[0], r[2], r[3]) for r in p_live}
    assert len(versions) == 2 * 2 * 3
    assert all(r[3] is not None for r in p_live)


def _same_ml_metrics(m_live: dict[str, Any], m_bt: dict[str, Any]) -> None:
    """The live run's ``models``/``ml`` documents: the backtest's scores over the same bars."""
    models = m_live["models"]
    assert set(models) == {"lightgbm", "mlp", "ensemble", "base_rate"}
    labelled = 2 * (N_BARS - 6)  # the last `horizon` (6) live bars of each symbol have no label yet
    for name, entry in models.items():
        if name == "base_rate":  # the constant forecast the scores are read against
            continue
        assert all(entry[k] is not None for k in ("auc", "log_loss", "brier", "calibration_error")), name
        assert 0 < entry["n"] <= labelled, name
        # folds 0-2 per symbol; fold 2 holds only the last 6 bars, still unlabelled: not scored
        assert len(entry["per_fold"]) == 2 * 3 and entry["folds"] == 2 * 2
        assert [f["n"] for f in entry["per_fold"] if f["fold"] == 2] == [0, 0]
        assert set(entry["per_symbol"]) == set(SYMBOLS)
        if name != "ensemble":
            assert 0 < entry["weight"] <= 1
    # the backtest over the same bars scores the same predictions: its bars end where the
    # live run's end, so its last `horizon` bars have no label either -> identical scores
    for name in models:
        for k in ("n", "auc", "log_loss", "brier", "calibration_error", "weight"):
            got, want = models[name].get(k), m_bt["models"][name].get(k)
            if want is None:  # e.g. the ensemble has no contribution weight
                assert got is None, (name, k)
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (name, k)
    info = m_live["ml"]
    assert info["versions"] == m_bt["ml"]["versions"]
    assert all(v["labelled"] <= v["predicted"] - 6 and v["predicted"] == N_BARS
               for v in info["scored_bars"].values())


def test_live_ml_ensemble_matches_the_backtest(ml_market: MarketData, usdm_store: Path,
                                               tmp_path: Path) -> None:
    first_live = ms(FIRST_LIVE)
    last = first_live + (N_BARS - 1) * BAR
    # 1. the backtest over [START, last bar]: trains folds 0-2, saved under tmp_path/models
    bt = run_backtest(strategy(START, last, text=ML_STRATEGY), store=usdm_store, results=tmp_path)
    assert bt.run_id is not None
    # 2. live: the minimal warm-up (training.warmup) is [START, first_live), then N_BARS bars
    graph = strategy(START, last, text=ML_STRATEGY)
    assert warmup_needed(graph) == (first_live - ms(START)) // BAR
    with simulator(ml_market, start_ms=first_live) as sim:
        res = drive(sim, graph, tmp_path, bars=N_BARS)
    assert res.status == "ok" and res.bars == N_BARS
    assert live_span(res.run_id, tmp_path) == (ms(START), first_live)

    # every column of decisions, final order states, trades and equity, NULL for NULL
    compare_runs(res.run_id, bt.run_id, first_live, tmp_path)
    d_live = q(f"SELECT open_time, action, target_position FROM decisions "
               f"WHERE run_id = '{res.run_id}' AND open_time >= {first_live}", tmp_path)
    assert len(d_live) == 2 * N_BARS
    assert {d["action"] for d in d_live} >= {"long", "short"}, "the ensemble must take both sides"
    # the skill-weighted fusion keeps a member without matured out-of-fold labels at weight 0
    # and the gate keeps weak edges flat: Kelly sizes positions in fewer bars than it did,
    # but in more than one fold (every 72 bars), each on its own fold's models
    fold = {(d["open_time"] - first_live) // (72 * BAR) for d in d_live if d["target_position"]}
    assert len(fold) >= 2, f"Kelly must size positions in more than one fold, sized in {fold}"

    _same_predictions(res.run_id, bt.run_id, first_live, last, tmp_path)

    early = q(f"SELECT count(*) AS n FROM orders WHERE run_id = '{bt.run_id}' AND open_time < {first_live}",
              tmp_path)
    assert early[0]["n"] == 0  # no fold before the first live bar: both start flat with the same cash

    # 3. the run's end stores the backtest's ML documents over the live bars it predicted
    m_live = json.loads(q(f"SELECT metrics FROM runs WHERE run_id = '{res.run_id}'", tmp_path)[0]["metrics"])
    m_bt = json.loads(q(f"SELECT metrics FROM runs WHERE run_id = '{bt.run_id}'", tmp_path)[0]["metrics"])
    _same_ml_metrics(m_live, m_bt)
    ev = q(f"SELECT component, message FROM events WHERE run_id = '{res.run_id}' "
           f"AND component LIKE 'ml%'", tmp_path)
    assert any(e["component"] == "ml.train" and "walk-forward: 6 folds" in e["message"] for e in ev), ev

    # 4. engine report renders the live run's models section from runs.metrics['models']
    page = tmp_path / "live_report.html"
    out = CliRunner().invoke(app, ["report", res.run_id, "--results", str(tmp_path), "--out", str(page)])
    assert out.exit_code == 0, out.output
    html = page.read_text()
    assert "Walk-forward metrics reported by training (runs.metrics[&#x27;models&#x27;])" in html or \
        "Walk-forward metrics reported by training (runs.metrics['models'])" in html
    assert "Calibration curve" in html
    # the page loads in a real headless Chromium (network blocked) with the table in its DOM
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; scripts/test installs it)")
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--proxy-server=http://127.0.0.1:9",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Walk-forward metrics reported by training" in dom.stdout and "Uncaught" not in dom.stderr
    assert all(f">{m}<" in dom.stdout for m in ("lightgbm", "mlp", "ensemble"))
