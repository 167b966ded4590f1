"""Indicator kinds: the integer codes of compiled plans, their outputs, state sizes and
declared warm-ups (plain Python; the kernels read these constants at compile time).

:func:`warmup` gives, per kind and output, the index (0-based, in bars of the indicator's own
timeframe) of the first bar that has a value: TA-Lib's lookback. It is declared, not
inferred from NaNs; the tests check it is the first value of every kind.
"""

from __future__ import annotations

import numpy as np

NAN = np.nan

# Indicator kinds (integer codes used in compiled plans).
RAW_VOLUME = 0
SMA = 1
EMA = 2
RSI = 3
MACD = 4
BBANDS = 5
ATR = 6
OBV = 7
DMI = 8
CANDLE = 9
MOM = 10
LOGRET = 11
FUNDING = 12
N_KINDS = 13

# Price source of the single-input kinds (SMA, EMA, MOM).
SRC_CLOSE = 0
SRC_VOLUME = 1

# Outputs per kind.
N_OUTPUTS = (1, 2, 1, 1, 3, 5, 2, 1, 3, 3, 1, 1, 2)
MAX_OUTPUTS = 5

#: Binance USD-M funding: every 8 hours, at 00:00, 08:00 and 16:00 UTC
FUNDING_PERIOD_MS = 8 * 3_600_000


def state_size(kind: int, p0: int, p1: int, p2: int) -> int:
    """Length of the state slice of one indicator (its count included)."""
    if kind == SMA:
        return 5 + p0  # count, sum, shifted sum, shifted sum of squares, shift, ring
    if kind == EMA:
        return 3  # count, seed sum, ema
    if kind == RSI:
        return 4  # count, previous close, average gain, average loss
    if kind == MACD:
        return 7  # count, slow sum, fast sum, slow ema, fast ema, signal sum, signal ema
    if kind == BBANDS:
        return 5 + p0  # count, sum, shifted sum, shifted sum of squares, shift, ring
    if kind == ATR:
        return 3  # count, previous close, sum / atr
    if kind == OBV:
        return 3  # count, previous close, obv
    if kind == DMI:
        return 9  # count, prev high, prev low, prev close, +DM, -DM, TR, sum DX, ADX
    if kind in (MOM, LOGRET):
        return 1 + p0  # count, ring of p0 inputs
    return 1  # stateless kinds keep only their count


def warmup(kind: int, output: int, p0: int, p1: int, p2: int) -> int:
    """Index of the first bar with a value (TA-Lib's lookback), per kind and output."""
    if kind in (SMA, EMA, BBANDS):
        return p0 - 1
    if kind in (RSI, ATR, MOM, LOGRET):
        return p0
    if kind == MACD:
        slow = max(p0, p1)
        return slow + p2 - 2
    if kind == DMI:
        return 2 * p0 - 1 if output == 0 else p0
    return 0
