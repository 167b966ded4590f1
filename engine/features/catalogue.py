"""Feature names: the catalogue, name parsing, validation and compiled plans.

A feature name is ``<family>[_<params>][_<timeframe>]``: ``rsi_14``, ``bb_upper_50``,
``macd_hist``, ``volume_ratio_30``, ``rsi_14_1h``. The timeframe suffix (any Binance interval
longer than, and a multiple of, the base interval) selects the same feature computed on bars
built from the base bars; see :mod:`engine.features.htf_nb` for when such values appear.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np

from engine.errors import ConfigError
from engine.features import kinds as ind
from engine.timeutil import INTERVALS, interval_ms

MAX_PERIOD = 100_000

# Default higher timeframes, by base interval: those of these that the base divides.
HTF_DEFAULTS = ("15m", "1h")

# Families: name stem -> (kind, output index, parameter layout, defaults, minimum period).
# layout "n": one period (required unless defaults given); "fsg": fast_slow_signal; "": none.
_Fam = tuple[int, int, str, tuple[int, ...], int]
FAMILIES: dict[str, _Fam] = {
    "rsi": (ind.RSI, 0, "n", (), 2),
    "ema": (ind.EMA, 0, "n", (), 2),
    "sma": (ind.SMA, 0, "n", (), 2),
    "volume": (ind.RAW_VOLUME, 0, "", (), 0),
    "volume_sma": (ind.SMA, 0, "n", (), 2),
    "volume_ratio": (ind.SMA, 1, "n", (20,), 2),
    "macd": (ind.MACD, 0, "fsg", (12, 26, 9), 2),
    "macd_signal": (ind.MACD, 1, "fsg", (12, 26, 9), 2),
    "macd_hist": (ind.MACD, 2, "fsg", (12, 26, 9), 2),
    "bb_upper": (ind.BBANDS, 0, "n", (20,), 2),
    "bb_middle": (ind.BBANDS, 1, "n", (20,), 2),
    "bb_lower": (ind.BBANDS, 2, "n", (20,), 2),
    "bb_width": (ind.BBANDS, 3, "n", (20,), 2),
    "bb_pct": (ind.BBANDS, 4, "n", (20,), 2),
    "atr": (ind.ATR, 0, "n", (), 1),
    "atr_pct": (ind.ATR, 1, "n", (), 1),
    "obv": (ind.OBV, 0, "", (), 0),
    "adx": (ind.DMI, 0, "n", (), 2),
    "plus_di": (ind.DMI, 1, "n", (), 2),
    "minus_di": (ind.DMI, 2, "n", (), 2),
    "body_ratio": (ind.CANDLE, 0, "", (), 0),
    "upper_shadow": (ind.CANDLE, 1, "", (), 0),
    "lower_shadow": (ind.CANDLE, 2, "", (), 0),
    "momentum": (ind.MOM, 0, "n", (), 1),
    "volume_momentum": (ind.MOM, 0, "n", (), 1),
    "log_return": (ind.LOGRET, 0, "n", (), 1),
    "funding_rate": (ind.FUNDING, 0, "", (), 0),
    "minutes_to_funding": (ind.FUNDING, 1, "", (), 0),
}
_VOLUME_SOURCED = {"volume_sma", "volume_ratio", "volume_momentum"}
_BASE_ONLY = {"funding_rate", "minutes_to_funding"}
BB_NBDEV = 2.0

# The catalogue on the base interval (29 bar features + 2 funding features).
BASE_CATALOGUE = (
    "rsi_14", "rsi_28",
    "volume", "volume_sma_20", "volume_ratio",
    "ema_9", "ema_20", "ema_50", "ema_200",
    "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_middle", "bb_lower", "bb_width", "bb_pct",
    "atr_14", "atr_pct_14",
    "obv",
    "adx_14", "plus_di_14", "minus_di_14",
    "body_ratio", "upper_shadow", "lower_shadow",
    "momentum_10", "volume_momentum_10",
    "log_return_1",
    "funding_rate", "minutes_to_funding",
)  # fmt: skip

_TF_RE = re.compile(r"^\d+[mhdw]$")
_NUM_RE = re.compile(r"^\d+$")


@dataclass(frozen=True)
class FeatureSpec:
    """One parsed feature name.

    ``kind``/``output`` select an indicator output (see :mod:`engine.features.kinds`),
    ``params`` its integer parameters ``(p0, p1, p2)``, ``tf`` the higher timeframe (None for
    the base interval) and ``warmup`` the index, in bars of that timeframe, of its first value.
    """

    name: str
    kind: int
    output: int
    params: tuple[int, int, int]
    tf: str | None
    warmup: int

    @property
    def op_key(self) -> tuple[str | None, int, tuple[int, int, int]]:
        return (self.tf, self.kind, self.params)


def higher_timeframes(interval: str) -> list[str]:
    """The default higher timeframes for a base interval (``5m`` -> ``["15m", "1h"]``)."""
    base = interval_ms(interval)
    return [tf for tf in HTF_DEFAULTS if interval_ms(tf) > base and interval_ms(tf) % base == 0]


def default_names(interval: str) -> list[str]:
    """The whole catalogue for a base interval, higher-timeframe variants included.

    >>> len(default_names("5m"))
    89
    """
    names = list(BASE_CATALOGUE)
    for tf in higher_timeframes(interval):
        names += [f"{n}_{tf}" for n in BASE_CATALOGUE if n not in _BASE_ONLY]
    return names


def _suggest(name: str, interval: str | None) -> str:
    tokens = name.split("_")
    tail: list[str] = []
    while tokens and (_NUM_RE.match(tokens[-1]) or _TF_RE.match(tokens[-1])):
        tail.insert(0, tokens.pop())
    candidates = set(default_names(interval or "5m")) | set(FAMILIES)
    if tail:
        candidates |= {"_".join([fam, *tail]) for fam in FAMILIES}
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}? Valid names look like rsi_14, ema_34, bb_upper_50, rsi_14_1h"
    return (
        "valid names look like rsi_14, ema_34, atr_21, sma_100, bb_upper_50, macd_hist, rsi_14_1h"
    )


def parse_name(name: str, *, interval: str | None = None, where: str = "features") -> FeatureSpec:
    """Parse one feature name, raising :class:`ConfigError` (with a suggestion) if invalid."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: feature names must be non-empty strings, got {name!r}")
    tokens = name.split("_")
    tf: str | None = None
    if len(tokens) > 1 and _TF_RE.match(tokens[-1]):
        tf = tokens.pop()
    nums: list[int] = []
    while len(tokens) > 1 and _NUM_RE.match(tokens[-1]):
        nums.insert(0, int(tokens.pop()))
    stem = "_".join(tokens)
    fam = FAMILIES.get(stem)
    if fam is None:
        raise ConfigError(f"{where}: unknown feature {name!r}", hint=_suggest(name, interval))
    kind, output, layout, defaults, min_period = fam
    want = {"n": 1, "fsg": 3, "": 0}[layout]
    if not nums and defaults:
        nums = list(defaults)
    if len(nums) != want:
        if want == 0:
            raise ConfigError(
                f"{where}: feature {name!r}: {stem!r} takes no period",
                hint=f"write {stem!r}" + (f" or {stem}_<tf>" if stem not in _BASE_ONLY else ""),
            )
        example = {"n": f"{stem}_14", "fsg": f"{stem}_12_26_9"}[layout]
        raise ConfigError(
            f"{where}: feature {name!r}: {stem!r} needs {'a period' if want == 1 else 'fast_slow_signal periods'}",
            hint=f"write for example {example!r}" + (f" or {stem!r}" if defaults else ""),
        )
    for j, v in enumerate(nums):
        lo = 1 if (layout == "fsg" and j == 2) else min_period
        if not lo <= v <= MAX_PERIOD:
            raise ConfigError(
                f"{where}: feature {name!r}: period must be between {lo} and {MAX_PERIOD}, got {v}",
                hint=f"for example {stem}_{max(lo, 14)}",
            )
    if tf is not None:
        if stem in _BASE_ONLY:
            raise ConfigError(
                f"{where}: feature {name!r}: {stem} has no higher-timeframe variant",
                hint=f"write {stem!r}",
            )
        if tf not in INTERVALS:
            raise ConfigError(
                f"{where}: feature {name!r}: unknown timeframe {tf!r}",
                hint=f"use one of Binance's intervals: {', '.join(INTERVALS)}",
            )
        if interval is not None:
            base, htf = interval_ms(interval), interval_ms(tf)
            if htf == base:
                raise ConfigError(
                    f"{where}: feature {name!r}: {tf} is the base interval",
                    hint=f"drop the suffix: {name[: -len(tf) - 1]!r}",
                )
            if htf < base or htf % base:
                raise ConfigError(
                    f"{where}: feature {name!r}: timeframe {tf} is not a multiple of the base interval {interval}",
                    hint="a higher timeframe must be longer than the base interval and a multiple of it",
                )
    if layout == "n":
        p = (nums[0], ind.SRC_VOLUME if stem in _VOLUME_SOURCED else ind.SRC_CLOSE, 0)
    elif layout == "fsg":
        fast, slow = sorted(nums[:2])
        p = (fast, slow, nums[2])
    else:
        p = (0, 0, 0)
    if kind in (ind.RAW_VOLUME, ind.OBV, ind.CANDLE, ind.FUNDING):
        p = (0, 0, 0)
    return FeatureSpec(
        name=name, kind=kind, output=output, params=p, tf=tf, warmup=ind.warmup(kind, output, *p)
    )


def check_names(
    names: list[str] | tuple[str, ...], *, where: str = "features", interval: str | None = None
) -> list[FeatureSpec]:
    """Validate feature names; raise :class:`ConfigError` naming the first bad one.

    ``where`` is the place the names came from (a YAML path such as ``nodes.features.names``);
    the error names ``where[i]`` and suggests the closest valid name. With ``interval`` the
    timeframe suffixes are checked against the base interval too.

    >>> check_names(["rsi_14", "ema_34_1h"], interval="5m")[1].tf
    '1h'
    """
    if isinstance(names, str):
        raise ConfigError(
            f"{where}: expected a list of feature names, got the string {names!r}",
            hint=f"write [{names!r}]",
        )
    specs = []
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(
                f"{where}[{i}]: feature {name!r} is listed twice (also at [{seen[name]}])",
                hint="list each feature once",
            )
        seen[name] = i
        specs.append(parse_name(name, interval=interval, where=f"{where}[{i}]"))
    return specs


def warmup_bars(names: list[str] | None, *, interval: str) -> int:
    """Base bars before every named feature has a value, for data starting on a day boundary.

    A base feature with warm-up w has its first value at bar w; a higher-timeframe one at the
    base bar closing its (w+1)-th HTF bar. Funding features need no warm-up (but funding_rate
    is NaN until the first funding event).
    """
    specs = check_names(names if names is not None else default_names(interval), interval=interval)
    base = interval_ms(interval)
    need = 0
    for s in specs:
        if s.tf is None:
            need = max(need, s.warmup)
        else:
            need = max(need, (s.warmup + 1) * (interval_ms(s.tf) // base) - 1)
    return need


@dataclass(frozen=True)
class Plan:
    """A compiled plan (see :mod:`engine.features.plan_nb` for the array layout)."""

    names: tuple[str, ...]
    specs: tuple[FeatureSpec, ...]
    interval: str
    ops: np.ndarray  # int64 [n_ops, 8]
    pf: np.ndarray  # float64 [n_ops]
    tfs: np.ndarray  # int64 [n_tf, 4]
    sel: np.ndarray  # int64 [n_names]
    state_len: int
    n_slots: int
    tf_names: tuple[str, ...]  # "" for the base, then the HTF names in row order

    def new_state(self) -> tuple[np.ndarray, np.ndarray]:
        """A zeroed state vector and a NaN ``last`` vector."""
        return np.zeros(self.state_len), np.full(self.n_slots, np.nan)


def build_plan(
    names: list[str] | tuple[str, ...] | None, *, interval: str, where: str = "features"
) -> Plan:
    """Parse ``names`` and compile them into a :class:`Plan` (one indicator per distinct
    kind/parameters/timeframe, however many of its outputs are requested)."""
    if isinstance(names, str):  # check_names says what to write instead
        check_names(names, where=where, interval=interval)
    names = list(names) if names is not None else default_names(interval)
    specs = check_names(names, where=where, interval=interval)
    tf_order = [""] + sorted({s.tf for s in specs if s.tf is not None}, key=interval_ms)
    keys: list[tuple[str | None, int, tuple[int, int, int]]] = []
    for s in specs:
        if s.op_key not in keys:
            keys.append(s.op_key)
    keys.sort(key=lambda k: tf_order.index(k[0] or ""))
    ops = np.zeros((len(keys), 8), dtype=np.int64)
    pf = np.zeros(len(keys))
    slot_of: dict[tuple[str | None, int, tuple[int, int, int]], int] = {}
    off = 0
    slot = 0
    for i, (tf, kind, p) in enumerate(keys):
        n_out = ind.N_OUTPUTS[kind]
        ops[i] = (kind, tf_order.index(tf or ""), off, slot, p[0], p[1], p[2], n_out)
        pf[i] = BB_NBDEV
        slot_of[(tf, kind, p)] = slot
        off += ind.state_size(kind, *p)
        slot += n_out
    base = interval_ms(interval)
    tfs = np.zeros((len(tf_order), 4), dtype=np.int64)
    for k, tf in enumerate(tf_order):
        idx = [i for i in range(len(keys)) if ops[i, 1] == k]
        first, end = (idx[0], idx[-1] + 1) if idx else (0, 0)
        if k == 0:
            tfs[k] = (base, -1, first, end)
        else:
            tfs[k] = (interval_ms(tf), off, first, end)
            off += 8
    sel = np.array([slot_of[s.op_key] + s.output for s in specs], dtype=np.int64)
    return Plan(
        names=tuple(names),
        specs=tuple(specs),
        interval=interval,
        ops=ops,
        pf=pf,
        tfs=tfs,
        sel=sel,
        state_len=max(off, 1),
        n_slots=max(slot, 1),
        tf_names=tuple(tf_order),
    )
