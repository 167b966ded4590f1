"""The strategy graph: a validated config with its params resolved and its rules compiled.

    candles (symbols x interval, higher timeframes derived) -> features -> signals
      -> [models -> ensemble]  (ML nodes, engine.ml)  -> risk -> execution

A :class:`StrategyGraph` is what both the backtest runner and live mode take. It is built
once by :func:`engine.strategy.load.load_strategy`; nothing in it depends on data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.strategy.config import DataConfig, StrategyConfig
from engine.strategy.expr import PRICE_COLUMNS, CompiledExpr
from engine.strategy.ml_config import MLSections, public_url
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
        for node in out.get("models") or []:  # a remote member's credentials are never logged
            if node.get("url"):
                node["url"] = public_url(node["url"])
        out["features_resolved"] = list(self.features)
        out["signals_resolved"] = {k: r.text for k, r in self.rules.items()}
        out["source"] = self.source
        out["overrides"] = list(self.overrides)
        return out

    def nodes(self) -> list[tuple[str, str]]:
        """(node, description) pairs in graph order, for ``engine validate``."""
        c = self.config
        out = [
            ("candles", _candles_text(c.data)),
            ("features", f"{len(self.feature_columns)}: {', '.join(self.feature_columns) or '-'}"),
        ]
        for key, rule in self.rules.items():
            out.append((f"signal {key}", f"{rule.text}  (lookback {rule.lookback})"))
        ml = c.ml()
        if ml is not None:
            out.extend(_ml_nodes(ml))
        out.append(("risk", c.risk.describe()))
        out.append(("execution", c.execution.describe()))
        return out


def _candles_text(d: DataConfig) -> str:
    start = fmt_ms(d.start) if d.start is not None else "store start"
    end = fmt_ms(d.end) if d.end is not None else "store end"
    htf = f" + {', '.join(d.higher_timeframes)} derived" if d.higher_timeframes else ""
    return f"{d.market} {', '.join(d.symbols)} {d.interval}{htf}; {start} .. {end}" + (
        "; funding" if d.funding else ""
    )


def _ml_nodes(ml: MLSections) -> list[tuple[str, str]]:
    """The labels, training, models and ensemble nodes of an ML strategy."""
    lab, tr, ens = ml.labels, ml.training, ml.ensemble
    models = ", ".join(m.name if m.name == m.kind else f"{m.name} ({m.kind})" for m in ml.models)
    gate = ens.gate
    return [
        (
            "labels",
            f"forward {lab.horizon} bars, cost {lab.cost_bps:g} bp, "
            f"flat band {lab.flat_band_bps:g} bp",
        ),
        (
            "training",
            f"walk-forward: window {tr.train_window}, retrain every {tr.retrain_every}, "
            f"embargo {tr.embargo}, seed {tr.seed}",
        ),
        ("models", models),
        (
            "ensemble",
            f"{ens.fusion} fusion, {ens.calibration} calibration; gate: uncertainty <= "
            f"{gate.max_uncertainty:g}, agreement >= {gate.min_agreement:g}, "
            f"edge >= {gate.min_edge:g}",
        ),
    ]
