"""Funding features live: settled funding events reach the feature streams (REST
/fapi/v1/fundingRate at warm-up and after each funding time) so a rule on ``funding_rate`` and
``minutes_to_funding`` decides and fills exactly as the backtest over bars that cross the
08:00 and 16:00 UTC funding times of 2024-01-01."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.exchange_sim.market import MarketData

from .conftest import STRATEGY, drive, simulator
from .test_parity import assert_parity, q

# long only while the last settled rate is below 3.2 bp: BTC 2.72 / ETH 3.11 bp at 08:00,
# 3.36 / 4.30 bp at 16:00; no funding event is known before 08:00 (NaN: no long)
FUNDING_STRATEGY = STRATEGY.replace(
    'features: ["ema_{{fast}}", "ema_{{slow}}"]',
    'features: ["ema_{{fast}}", "ema_{{slow}}", funding_rate, minutes_to_funding]',
).replace(
    "long: ema_{{fast}} > ema_{{slow}}",
    "long: ema_{{fast}} > ema_{{slow}} and funding_rate < 0.00032",
).replace(
    "short: ema_{{fast}} < ema_{{slow}}",
    "short: ema_{{fast}} < ema_{{slow}} and minutes_to_funding > 45",
)
N_BARS = 130  # 06:00 -> 16:50 UTC: crosses two funding times
H = 3_600_000


@pytest.mark.slow
def test_funding_features_match_the_backtest(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    assert FUNDING_STRATEGY.count("funding") >= 4
    with simulator(market) as sim:
        res = drive(sim, _graph(), tmp_path, bars=N_BARS)
    assert res.status == "ok"
    n_dec, n_fills = assert_parity(res.run_id, tmp_path, usdm_store, text=FUNDING_STRATEGY)
    assert n_dec == 2 * N_BARS and n_fills >= 10
    day = 1_704_067_200_000  # 2024-01-01
    longs = q(f"SELECT symbol, open_time FROM decisions WHERE run_id = '{res.run_id}' "
              f"AND action = 'long'", tmp_path)
    assert longs, "some bars between 08:00 and 16:00 must go long"
    # the 08:00 rate is in force from the bar closing at 08:00 to the bar closing at 16:00
    for r in longs:
        assert day + 8 * H - 300_000 <= r["open_time"] < day + 16 * H - 300_000, r
    # no short on a bar closing within 45 minutes of a funding time
    shorts = q(f"SELECT open_time FROM decisions WHERE run_id = '{res.run_id}' AND action = 'short'",
               tmp_path)
    assert shorts
    for r in shorts:
        close = r["open_time"] + 300_000
        assert (8 * H - close % (8 * H)) / 60_000 > 45


def _graph():  # type: ignore[no-untyped-def]
    from .conftest import strategy

    return strategy(text=FUNDING_STRATEGY)
