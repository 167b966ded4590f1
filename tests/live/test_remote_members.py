"""The seed's integration test: a live ML run against the exchange simulator whose four members
(LightGBM, XGBoost, MLP, Prophet) are served by four ``engine serve-model`` processes on
127.0.0.1 decides exactly as the in-process run over the same real bars while all four are up;
one server killed mid-run makes its member abstain (system_events, weight 0 and a NULL
probability in model_predictions) without stalling a bar, and the run goes on; the server
restarted on its port brings the member back (its answers the in-process model's again).
A server that hangs (SIGSTOP) holds a bar no longer than its member's own ``timeout_s``."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.exchange_sim.market import MarketData
from engine.timeutil import parse_end

from .conftest import BAR, drive, ms, simulator, strategy
from .parity import compare, q
from .proc import free_port
from .test_ml_parity import ML_STRATEGY

pytestmark = pytest.mark.slow

START = "2024-01-01"  # the warm-up's first bar (the folds' anchor)
FIRST_LIVE = "2024-01-03T00:00"  # START + training.warmup (2d): fold 0's cutoff
N_BARS = 30  # all in fold 0 (retrain_every 1d): every member is one saved version throughout
KILL_AFTER = 11  # bars 0..11: all four up; the XGBoost server is SIGKILLed after bar 11
RESTART_AFTER = 19  # bars 12..19: XGBoost abstains; restarted after bar 19; bars 20..29 back
KILLED = "xgboost"
TIMEOUT_S = 2.0
HUNG, HUNG_TIMEOUT_S = "mlp", 0.25  # SIGSTOPped after bar 21, SIGCONTed after bar 23
HANG_AFTER, RESUME_AFTER = 21, 23
#: each member's params
MEMBERS = {
    "lightgbm": {"n_estimators": 15, "num_leaves": 7, "min_data_in_leaf": 20},
    "xgboost": {"n_estimators": 10, "max_depth": 3},
    "mlp": {"hidden_layer_sizes": [8], "max_iter": 15},
    "prophet": {"window": "2d", "n_changepoints": 3},
}
#: test_ml_parity's small ensemble on BTCUSDT alone, one fold (0) over the whole live window
SHAPE = (
    "data.symbols=[BTCUSDT]",
    "training.train_window=2d",
    "training.retrain_every=1d",
    "training.warmup=2d",
)


def graph(end: int, models: list[dict[str, Any]]) -> Any:
    """ML_STRATEGY with ``models`` (JSON is YAML; braces doubled: the text is a format string)."""
    head, rest = ML_STRATEGY.split("\nmodels:\n")
    tail = rest[rest.index("\nensemble:") :]
    listed = json.dumps(models).replace("{", "{{").replace("}", "}}")
    return strategy(START, end, text=head + "\nmodels: " + listed + tail, sets=SHAPE)


def in_process(end: int) -> Any:
    return graph(end, [{"kind": k, "name": k, "params": p} for k, p in MEMBERS.items()])


def remote(end: int, ports: dict[str, int]) -> Any:
    """Every member ``remote``, named as in process; the hung one with a short timeout."""
    return graph(
        end,
        [
            {
                "kind": "remote",
                "name": k,
                "url": f"http://127.0.0.1:{ports[k]}",
                "timeout_s": HUNG_TIMEOUT_S if k == HUNG else TIMEOUT_S,
            }
            for k in MEMBERS
        ],
    )


class Server:
    """One ``engine serve-model`` process on a fixed port of 127.0.0.1."""

    def __init__(self, folder: Path, port: int, log: Path) -> None:
        self.folder, self.port, self.log = folder, port, log
        self.p: subprocess.Popen[str] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "engine",
            "serve-model",
            str(self.folder),
            "--port",
            str(self.port),
        ]
        with open(self.log, "ab") as err:
            self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)

    def wait_ready(self, timeout: float = 60.0) -> str:
        """The address it prints once listening."""
        assert self.p is not None and self.p.stdout is not None
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline() if ready else ""
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m and int(m.group(1)) == self.port, (line, self.log.read_text()[-2000:])
        return m.group(0)

    def signal(self, sig: int) -> None:
        assert self.p is not None
        self.p.send_signal(sig)

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
        if self.p is not None:
            self.p.wait(10)
            if self.p.stdout is not None:
                self.p.stdout.close()


@pytest.fixture(scope="module")
def btc_market(usdm_store: Path) -> MarketData:
    md, _ = MarketData.load(
        ["BTCUSDT"],
        interval="5m",
        start_ms=ms(START),
        end_ms=parse_end("2024-01-03T06:00"),
        store=usdm_store,
    )
    return md


def warm(url: str) -> None:
    """One prediction before the run, so no member's first answer (its model loaded, its
    kernels compiled) counts against the 0.25 s deadline of the hung member's test."""
    with urllib.request.urlopen(f"{url}/health", timeout=30) as r:
        features = json.loads(r.read())["features"]
    body = json.dumps({"rows": [[0.0] * len(features)], "open_time": [0], "close": [1.0]})
    req = urllib.request.Request(f"{url}/predict", data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.HTTPError:
        pass  # a model that refuses this row (Prophet, out of its span) has loaded all the same


def rows(sql: str, results: Path) -> list[dict[str, Any]]:
    return q(sql, results)


def test_members_served_by_engine_serve_model_processes(
    btc_market: MarketData, tmp_path: Path
) -> None:
    first_live = ms(FIRST_LIVE)
    last = first_live + (N_BARS - 1) * BAR
    kill_at = first_live + (KILL_AFTER + 1) * BAR  # the first bar decided without the server
    back_at = first_live + (RESTART_AFTER + 1) * BAR  # the first bar after its restart

    # 1. the in-process run: trains fold 0 of each member (saved under tmp_path/models)
    with simulator(btc_market, symbols=("BTCUSDT",), start_ms=first_live) as sim:
        ref = drive(sim, in_process(last), tmp_path, bars=N_BARS)
    assert ref.status == "ok" and ref.bars == N_BARS
    saved = rows(
        f"SELECT model, any_value(model_version) AS v, count(DISTINCT model_version) "
        f"AS n FROM predictions WHERE run_id = '{ref.run_id}' GROUP BY model",
        tmp_path,
    )
    assert {r["model"] for r in saved} == set(MEMBERS) and all(r["n"] == 1 for r in saved)
    versions = {r["model"]: r["v"] for r in saved}

    # 2. one engine serve-model process per member, each serving that member's saved version
    ports = {k: free_port() for k in MEMBERS}
    servers = {
        k: Server(tmp_path / "models" / versions[k], ports[k], tmp_path / f"{k}.log")
        for k in MEMBERS
    }
    try:
        for s in servers.values():
            s.start()
        urls = {k: s.wait_ready() for k, s in servers.items()}
        for url in urls.values():
            warm(url)

        def between(k: int) -> None:
            if k == KILL_AFTER:
                servers[KILLED].kill()
            elif k == RESTART_AFTER:
                servers[KILLED].start()
                servers[KILLED].wait_ready()
            elif k == HANG_AFTER:
                servers[HUNG].signal(signal.SIGSTOP)
            elif k == RESUME_AFTER:
                servers[HUNG].signal(signal.SIGCONT)

        # 3. the same strategy with every member remote, live on a fresh simulator
        with simulator(btc_market, symbols=("BTCUSDT",), start_ms=first_live) as sim:
            res = drive(
                sim,
                remote(last, ports),
                tmp_path,
                bars=N_BARS,
                between=between,
            )
    finally:
        for s in servers.values():
            s.kill()
    assert res.status == "ok" and res.bars == N_BARS  # the run went on through the outages

    _same_decisions_while_all_up(res.run_id, ref.run_id, first_live, kill_at, tmp_path)
    _member_abstains_then_comes_back(res.run_id, ref.run_id, urls, kill_at, back_at, last, tmp_path)
    _hung_member_waits_its_timeout(res.run_id, tmp_path)


def _same_decisions_while_all_up(
    run: str, ref: str, first_live: int, kill_at: int, results: Path
) -> None:
    """Every column of every decision, and every member's model version (the one its server
    named), raw and calibrated P(up) and weight, equal the in-process run's while the four
    servers are up."""

    def decisions(rid: str) -> list[dict[str, Any]]:
        return rows(
            f"SELECT * FROM decisions WHERE run_id = '{rid}' AND open_time >= "
            f"{first_live} AND open_time < {kill_at} ORDER BY open_time",
            results,
        )

    got, want = decisions(run), decisions(ref)
    assert len(got) == KILL_AFTER + 1
    compare("decisions", got, want)
    assert any(d["target_position"] != 0 for d in want), "the ensemble must trade in the window"

    def preds(rid: str) -> list[tuple[Any, ...]]:
        return [
            tuple(r.values())
            for r in rows(
                f"SELECT open_time, model, model_version, probability, calibrated, weight "
                f"FROM predictions "
                f"WHERE run_id = '{rid}' AND open_time < {kill_at} ORDER BY open_time, model",
                results,
            )
        ]

    assert preds(run) == preds(ref) and len(preds(ref)) == 4 * (KILL_AFTER + 1)


def _member_abstains_then_comes_back(
    run: str, ref: str, urls: dict[str, str], kill_at: int, back_at: int, last: int, results: Path
) -> None:
    p = rows(
        f"SELECT open_time, model, probability, weight, endpoint, latency_ms "
        f"FROM predictions WHERE run_id = '{run}' ORDER BY open_time, model",
        results,
    )
    assert len(p) == 4 * N_BARS  # a remote member has a row at every bar, answered or not
    assert all(r["endpoint"] == urls[r["model"]] for r in p)  # the server that was asked
    down = [r for r in p if r["model"] == KILLED and kill_at <= r["open_time"] < back_at]
    assert len(down) == RESTART_AFTER - KILL_AFTER
    assert all(r["probability"] is None and r["weight"] == 0 for r in down), down
    # a refused connection abstains at once: no bar waited for the member's timeout
    assert max(r["latency_ms"] for r in down) < 1000 * TIMEOUT_S / 4, down
    others = [r for r in p if r["model"] not in (KILLED, HUNG) and kill_at <= r["open_time"]]
    assert all(r["probability"] is not None for r in others)
    # restarted: the member answers again, the in-process model's own raw P(up)
    ref_raw = {
        r["open_time"]: r["probability"]
        for r in rows(
            f"SELECT open_time, probability FROM predictions WHERE run_id = '{ref}' "
            f"AND model = '{KILLED}'",
            results,
        )
    }
    back = [r for r in p if r["model"] == KILLED and r["open_time"] >= back_at]
    assert len(back) == N_BARS - RESTART_AFTER - 1
    assert [r["probability"] for r in back] == [ref_raw[r["open_time"]] for r in back]
    assert all(r["weight"] is not None for r in back)
    # one decision per bar throughout; the outage is in system_events
    d = rows(
        f"SELECT count(*) AS n, max(open_time) AS t FROM decisions WHERE run_id = '{run}' "
        f"AND open_time >= {kill_at - (KILL_AFTER + 1) * BAR}",
        results,
    )[0]
    assert d == {"n": N_BARS, "t": last}
    ev = rows(
        f"SELECT time, component, message, data FROM events WHERE run_id = '{run}' "
        f"AND component LIKE 'ml.%{KILLED}' ORDER BY time",
        results,
    )
    remote = [e for e in ev if e["component"] == f"ml.remote.{KILLED}"]
    # as it happens: one event when the server stops answering, one when it answers again
    changes = [json.loads(e["data"]) for e in remote if "state" in (e["data"] or "")]
    assert [(c["state"], c["bar"]) for c in changes] == [("down", kill_at), ("up", back_at)]
    assert changes[0]["reason"] == "ConnectionRefusedError" and changes[1]["bars_down"] == len(down)
    assert all(c["endpoint"] == urls[KILLED] for c in changes)
    # the run's summary: one event per failed request, at its bar
    failed = [e for e in remote if "state" not in (e["data"] or "")]
    assert [e["time"] for e in failed] == [r["open_time"] for r in down], ev
    assert all(urls[KILLED] + "/predict failed" in e["message"] for e in failed)
    summary = [e for e in ev if e["component"] == f"ml.model.{KILLED}"]
    assert len(summary) == 1 and f"abstained on {len(down)} of {N_BARS}" in summary[0]["message"]


def _hung_member_waits_its_timeout(run: str, results: Path) -> None:
    """Bars 22 and 23: the SIGSTOPped server accepts (the kernel does) and never answers; its
    member abstains after its own 0.25 s, the other members answer as usual."""
    first_live = ms(FIRST_LIVE)
    hung = [first_live + (k + 1) * BAR for k in range(HANG_AFTER, RESUME_AFTER)]
    p = rows(
        f"SELECT open_time, probability, weight, latency_ms FROM predictions "
        f"WHERE run_id = '{run}' AND model = '{HUNG}' ORDER BY open_time",
        results,
    )
    for r in p:
        if r["open_time"] in hung:
            assert r["probability"] is None and r["weight"] == 0, r
            assert 1000 * HUNG_TIMEOUT_S <= r["latency_ms"] < 1000 * HUNG_TIMEOUT_S + 500, r
        else:
            assert r["probability"] is not None, r
    ev = rows(
        f"SELECT time, message, data FROM events WHERE run_id = '{run}' "
        f"AND component = 'ml.remote.{HUNG}' ORDER BY time",
        results,
    )
    changes = [json.loads(e["data"]) for e in ev if '"state"' in e["data"]]
    assert [(c["state"], c["bar"], c.get("reason")) for c in changes] == [
        ("down", hung[0], "timeout"),
        ("up", hung[-1] + BAR, None),
    ]
    failed = [e for e in ev if '"state"' not in e["data"]]
    assert [e["time"] for e in failed] == hung, ev
    assert all("(timeout:" in e["message"] for e in failed), ev
