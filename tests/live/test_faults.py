"""10% of REST calls answered 5xx (half of the order POSTs AFTER the order was accepted) and
429 bursts every 3 s: live mode does not crash, the simulator's own weight counter never
goes over the venue's limit, no order reaches the exchange twice, every order whose status
was unknown is resolved (looked up by its client id), and what the run decided and traded
is still the backtest's. The request budget shows in /metrics."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from engine.exchange_sim.market import MarketData

from .conftest import drive, faults, simulator, strategy
from .parity import q
from .proc import free_port
from .test_frames import scrape, total
from .test_parity import assert_parity

N_BARS = 80
WEIGHT_LIMIT = 1200


def _spy(peak: dict[str, Any]) -> Any:
    """Wrap the simulator's weight limiter: the highest count it reached, and every 429/418
    it answered itself (not the fault injector's bursts)."""
    lock = threading.Lock()

    def install(server: Any) -> None:
        limiter = server.limiter
        charge = limiter.charge

        def spied(ip: str, weight: int, now: float) -> int:
            try:
                return int(charge(ip, weight, now))
            except Exception:
                with lock:
                    peak["refused"] += 1
                raise
            finally:
                st = limiter._ips.get(ip)
                with lock:
                    peak["used"] = max(peak["used"], st.used if st else 0)

        limiter.charge = spied

    return install


@pytest.mark.slow
def test_5xx_and_429_bursts(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    peak = {"used": 0, "refused": 0}
    port = free_port()
    seen: dict[str, Any] = {}
    with simulator(market, faults=faults("http_5xx=0.1,http_429_burst=3s"), seed=1,
                   weight_limit=WEIGHT_LIMIT) as sim:
        sim.call(_spy(peak))

        def between(k: int) -> None:
            if k == N_BARS - 2:
                seen["metrics"] = scrape(port)

        res = drive(sim, strategy(), tmp_path, bars=N_BARS, metrics_port=port, between=between)
        ids = sim.call(lambda s: [o.client_id for o in s.exchange.orders.values()])
        events = sim.call(lambda s: s.faults.snapshot(last=100_000))
    assert res.status == "ok" and res.bars == N_BARS
    counts = events["counts"]
    assert counts.get("http_5xx", 0) >= 10 and counts.get("http_429_burst", 0) >= 3, counts
    accepted = [e for e in events["events"] if e["kind"] == "http_5xx" and e.get("accepted")]
    assert accepted, "some orders must have been accepted behind a 503"
    # the simulator's own counter
    assert 0 < peak["used"] <= WEIGHT_LIMIT and peak["refused"] == 0, peak
    # no order twice; every order of the exchange is in the log, filled; none left unknown
    assert len(ids) == len(set(ids))
    rid = res.run_id
    latest = {r["client_order_id"]: r["status"]
              for r in q(f"SELECT client_order_id, status FROM orders WHERE run_id = '{rid}'", tmp_path)}
    assert {latest[c] for c in ids} == {"filled"}
    assert all(st != "new" for st in latest.values()), latest
    found = q(f"SELECT count(*) AS n FROM events WHERE run_id = '{rid}' "
              f"AND message LIKE '%was accepted; not resent%'", tmp_path)[0]["n"]
    assert found >= len(accepted)
    assert_parity(rid, tmp_path, usdm_store)
    m = seen["metrics"]
    assert total(m, "request_weight_used") > 0
    assert {lab for (n, lab) in m if n == "request_budget_left"} >= {
        (("bucket", "weight_1m"),), (("bucket", "orders_10s"),), (("bucket", "orders_1m"),)}
    assert total(m, "exchange_errors_total") > 0
