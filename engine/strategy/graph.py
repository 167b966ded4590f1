"""The strategy graph: a validated config with its params resolved and its rules compiled.

    candles (symbols x interval, higher timeframes derived) -> features -> signals
      -> [models -> ensemble]  (ML nodes, engine.ml)  -> risk -> execution

A :class:`StrategyGraph` is what both the backtest runner and live mode take. It is built
once by :func:`engine.strategy.load.load_strategy`; nothing in it depends on data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.strategy.config import StrategyConfig
from engine.strategy.expr import PRICE_COLUMNS, CompiledExpr
from engine.timeutil import fmt_ms

RULE_KEYS = ("long", "short", "long_entry", "long_exit", "short_entry", "short_exit")


@dataclass(frozen=True)
class StrategyGraph:
    """A strategy ready to run.

    Attributes
    ----------
    config : the validated config, params overrides applied (templates as written).
    source : the file it came from.
    overrides : the ``--set`` items applied, as given.
    features : every feature column the graph computes (listed ones, those the rules read,
        and ``atr_N`` for ATR stops), params resolved, in a stable order.
    rules : compiled rules by key (``long``, ``short``, ``long_entry`` ...), params resolved.
    """

    config: StrategyConfig
    source: str
    overrides: tuple[str, ...]
    features: tuple[str, ...]
    rules: dict[str, CompiledExpr] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.config.data.symbols)

    @property
    def interval(self) -> str:
        return self.config.data.interval

    @property
    def lookback(self) -> int:
        """Bars of feature history the rules need to decide on the last bar."""
        return max((r.lookback for r in self.rules.values()), default=1)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Feature columns (excludes plain price columns, which come with the candles)."""
        return tuple(f for f in self.features if f not in PRICE_COLUMNS)

    def resolved(self) -> dict[str, Any]:
        """The whole config with params resolved, JSON-ready (stored in the run's params)."""
        out = self.config.model_dump(mode="json")
        out["features_resolved"] = list(self.features)
        out["signals_resolved"] = {k: r.text for k, r in self.rules.items()}
        out["source"] = self.source
        out["overrides"] = list(self.overrides)
        return out

    def nodes(self) -> list[tuple[str, str]]:
        """(node, description) pairs in graph order, for ``engine validate``."""
        c = self.config
        d = c.data
        span = f"{fmt_ms(d.start) if d.start is not None else 'store start'} .. {fmt_ms(d.end) if d.end is not None else 'store end'}"
        htf = f" + {', '.join(d.higher_timeframes)} derived" if d.higher_timeframes else ""
        out = [
            (
                "candles",
                f"{d.market} {', '.join(d.symbols)} {d.interval}{htf}; {span}"
                + ("; funding" if d.funding else ""),
            ),
            ("features", f"{len(self.feature_columns)}: {', '.join(self.feature_columns) or '-'}"),
        ]
        for key, rule in self.rules.items():
            out.append((f"signal {key}", f"{rule.text}  (lookback {rule.lookback})"))
        ml = c.ml()
        if ml is not None:
            lab, tr, ens = ml.labels, ml.training, ml.ensemble
            out.append(
                (
                    "labels",
                    f"forward {lab.horizon} bars, cost {lab.cost_bps:g} bp, flat band {lab.flat_band_bps:g} bp",
                )
            )
            out.append(
                (
                    "training",
                    f"walk-forward: window {tr.train_window}, retrain every {tr.retrain_every}, embargo {tr.embargo}, seed {tr.seed}",
                )
            )
            out.append(
                (
                    "models",
                    ", ".join(
                        m.name if m.name == m.kind else f"{m.name} ({m.kind})" for m in ml.models
                    ),
                )
            )
            gate = ens.gate
            out.append(
                (
                    "ensemble",
                    f"{ens.fusion} fusion, {ens.calibration} calibration; gate: uncertainty <= {gate.max_uncertainty:g}, "
                    f"agreement >= {gate.min_agreement:g}, edge >= {gate.min_edge:g}",
                )
            )
        r = c.risk
        sizing = (
            f"fixed {r.fraction:g} of equity"
            if r.sizing == "fixed"
            else f"kelly x {r.kelly_fraction:g}"
        )
        br = r.breaker
        breaker = ", ".join(
            s
            for s in (
                f"daily loss {br.daily_loss_pct:g}%" if br.daily_loss_pct is not None else "",
                f"drawdown {br.drawdown_pct:g}%" if br.drawdown_pct is not None else "",
                f"{br.max_consecutive_losses} losses"
                if br.max_consecutive_losses is not None
                else "",
            )
            if s
        )
        caps = ", ".join(
            s
            for s in (
                f"position <= {r.max_position_pct:g}%" if r.max_position_pct is not None else "",
                f"exposure <= {r.max_exposure_pct:g}%" if r.max_exposure_pct is not None else "",
                f"leverage <= {r.max_leverage:g}" if r.max_leverage is not None else "",
            )
            if s
        )
        out.append(
            (
                "risk",
                f"{sizing}; "
                + (caps or "no caps")
                + (
                    f"; breaker: {breaker}, cooldown {br.cooldown_bars} bars"
                    if breaker
                    else "; no breaker"
                ),
            )
        )
        e = c.execution
        stops = []
        for label, s in (("stop", e.stop_loss), ("target", e.take_profit)):
            if s is not None:
                stops.append(
                    f"{label} {s.pct:g}%"
                    if s.pct is not None
                    else f"{label} {s.atr:g} x atr_{s.atr_period}"
                )
        order = e.order_type + (
            f" (offset {e.limit_offset_bps:g} bp)" if e.order_type == "limit" else ""
        )
        out.append(
            (
                "execution",
                f"{order}, {e.margin_mode} x{e.leverage:g}, fees taker {e.taker_fee:g} maker {e.maker_fee:g}, "
                f"slippage {e.slippage_bps:g} bp, cash {e.initial_cash:g}"
                + (f"; {', '.join(stops)}" if stops else "")
                + ("" if e.exchange_filters else "; exchange filters OFF"),
            )
        )
        return out
