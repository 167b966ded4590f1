"""engine report: a self-contained HTML page, opened in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import UsageError
from engine.report import build_report
from engine.runlog import RunLog

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import BAR, START, write_synthetic_run  # noqa: E402

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


def chromium_dom(page: Path, tmp: Path) -> tuple[str, str]:
    """Load ``page`` in headless Chromium with all network blocked; return (DOM, stderr)."""
    if CHROMIUM is None:
        pytest.fail(
            "chromium is not installed: the report tests need a real browser "
            "(apt-get install -y chromium chromium-driver; scripts/test installs it)"
        )
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        # any network request would fail: nothing may be needed beyond the file itself
        "--proxy-server=http://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, out.stderr


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    results = tmp_path_factory.mktemp("results")
    rid = write_synthetic_run(results)
    page = build_report(rid, results_dir=results)
    return results, rid, page


def test_page_is_self_contained(ml_run: tuple[Path, str, Path]) -> None:
    results, rid, page = ml_run
    assert page == results / "reports" / f"{rid}.html"
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src\s*=", text, re.I), "no external scripts"
    assert not re.search(r"<link[^>]+href\s*=\s*['\"]?https?:", text, re.I), "no external styles"
    assert not re.search(r"<(img|iframe)[^>]+src\s*=\s*['\"]?https?:", text, re.I)
    assert "cdn.plot.ly" not in text.split("</head>", 1)[1]
    assert text.count("Plotly.newPlot") == 5  # equity, price, monthly, calibration, contribution
    assert not list(page.parent.glob(".*.tmp"))


def test_page_renders_in_chromium(ml_run: tuple[Path, str, Path], tmp_path: Path) -> None:
    _, rid, page = ml_run
    dom, stderr = chromium_dom(page, tmp_path)
    # plotly drew every figure (each plot gets its own 'main-svg' layers)
    for div in ("equity", "price-0", "monthly", "calibration", "contribution"):
        m = re.search(rf'<div id="{div}"[^>]*class="[^"]*plotly-graph-div[^"]*js-plotly-plot', dom)
        assert m, f"figure {div} was not drawn"
    assert dom.count('class="main-svg"') >= 10
    assert "Uncaught" not in stderr, stderr[-2000:]
    # the metrics table, trades and model sections are in the page as text
    assert re.search(r"<th class=\"l\">Total return</th><td>[-\d.]+%</td>", dom)
    assert re.search(r"<th class=\"l\">Sharpe</th><td>[-\d.]+</td>", dom)
    for text in (
        rid,
        "Monthly returns",
        "Trades",
        "lightgbm",
        "xgboost",
        "ensemble",
        "Calibration curve",
        "Model contributions",
        "circuit breaker tripped",
    ):
        assert text in dom, text
    # plotly wrote the trades' markers and the equity line as SVG paths
    assert 'class="scatterlayer' in dom and 'class="heatmaplayer' in dom


def test_model_metrics_match_engine_metrics(ml_run: tuple[Path, str, Path]) -> None:
    from engine.metrics import classification_metrics
    from engine.report.data import load_run
    from engine.report.models import analyse_models

    results, rid, _ = ml_run
    data = load_run(rid, results_dir=results)
    analysis = analyse_models(data)
    assert analysis is not None
    by_model = {r["model"]: r for r in analysis.logged_metrics}
    assert set(by_model) == {"lightgbm", "xgboost", "ensemble"}
    preds = RunLog(results).read(rid, "model_predictions").filter(pl.col("model") == "lightgbm")
    expect = classification_metrics(preds["label"].to_numpy(), preds["probability"].to_numpy())
    assert by_model["lightgbm"] == {"model": "lightgbm", **expect}
    assert by_model["lightgbm"]["auc"] > by_model["xgboost"]["auc"]  # less noise, better model
    shares = {r["model"]: r["evidence_share"] for r in analysis.contributions}
    assert sum(shares.values()) == pytest.approx(1.0)
    # the price chart fell back to the decision prices and said why
    assert data.prices[0].source.startswith("decision prices")
    assert any("candles not loaded from the store" in n for n in data.notes)


def test_run_without_models_and_failed_run(tmp_path: Path) -> None:
    rid = write_synthetic_run(tmp_path, n=200, models=False)
    text = build_report(rid, results_dir=tmp_path, out=tmp_path / "plain.html").read_text()
    assert "<h2>Models</h2>" not in text and "Total return" in text
    log = RunLog(tmp_path)
    with (
        pytest.raises(RuntimeError),
        log.run(mode="backtest", strategy="broken", params={"interval": "1h"}) as bad,
    ):
        log.write(
            bad, "equity", pl.DataFrame({"time": [START, START + BAR], "equity": [100.0, 90.0]})
        )
        raise RuntimeError("boom")
    text = build_report(bad, results_dir=tmp_path).read_text()
    assert "status is &#x27;failed&#x27;" in text
    assert "computed from the logged equity and trades" in text
    assert "-10.00%" in text  # total return computed from the equity


def test_unknown_run_lists_recent_runs(ml_run: tuple[Path, str, Path], tmp_path: Path) -> None:
    results, rid, _ = ml_run
    with pytest.raises(UsageError, match="unknown run_id 'nope'") as err:
        build_report("nope", results_dir=results)
    assert rid in (err.value.hint or "")
    res = CliRunner().invoke(app, ["report", "nope", "--results", str(results)])
    assert res.exit_code == 2
    res = CliRunner().invoke(app, ["report", "nope", "--results", str(tmp_path / "empty")])
    assert res.exit_code == 2
    assert not (tmp_path / "empty" / "reports").exists()


def test_cli_with_candles_from_the_store(usdm_dir: Path, tmp_path: Path) -> None:
    from engine.data import import_paths

    store = tmp_path / "store"
    import_paths([usdm_dir / "klines" / "BTCUSDT-1h.csv.gz"], store=store)
    results = tmp_path / "results"
    rid = write_synthetic_run(results, n=24 * 40)
    out = tmp_path / "r.html"
    res = CliRunner().invoke(
        app, ["report", rid, "--out", str(out), "--results", str(results), "--store", str(store)]
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "price: store 1h candles" in text
    assert "candles not loaded" not in text


def test_live_run_with_stored_model_metrics(tmp_path: Path) -> None:
    """A live run (rows appended to SQLite, no labels yet) whose metrics carry the training's
    walk-forward scores: the page shows them and says why it cannot score the run itself."""
    log = RunLog(tmp_path)
    rid = log.start_run(
        mode="live", strategy="ensemble", params={"symbols": ["ETHUSDT"], "interval": "1h"}
    )
    for i in range(30):
        t = START + i * BAR
        log.append(rid, "equity", {"time": t, "equity": 1000.0 + i})
        log.append(
            rid,
            "ensemble_decisions",
            {
                "symbol": "ETHUSDT",
                "open_time": t,
                "action": "long" if i % 2 else "flat",
                "target_position": 0.1 if i % 2 else 0.0,
                "probability": 0.55,
                "price": 1500.0 + i,
            },
        )
        for m, p in (("lightgbm", 0.6), ("prophet", 0.45)):
            log.append(
                rid,
                "model_predictions",
                {
                    "symbol": "ETHUSDT",
                    "open_time": t,
                    "model": m,
                    "model_version": f"{m}-v1",
                    "probability": p,
                },
            )
    curve = [
        {"mean_predicted": 0.3, "fraction_positive": 0.35, "count": 10},
        {"mean_predicted": 0.7, "fraction_positive": 0.66, "count": 12},
    ]
    models = {
        "lightgbm": {
            "auc": 0.61,
            "log_loss": 0.68,
            "brier": 0.24,
            "calibration_error": 0.03,
            "calibration_curve": curve,
            "folds": 12,
        },
        "prophet": {"auc": 0.52, "log_loss": 0.69, "brier": 0.25, "calibration_error": 0.05},
    }
    log.finish_run(rid, status="stopped", metrics={"total_return": 0.029, "models": models})
    page = build_report(rid, results_dir=tmp_path)
    text = page.read_text()
    assert (
        "Walk-forward metrics reported by training" in text and "0.6100" in text and ">12<" in text
    )
    assert "carry no realised labels" in text
    assert "Calibration curve" in text and "Model contributions" in text
    assert "price: decision prices" in text and "status is &#x27;stopped&#x27;" in text
    dom, stderr = chromium_dom(page, tmp_path)
    assert dom.count('class="main-svg"') >= 8 and "Uncaught" not in stderr
