"""Strategy files: schema, params, rule expressions and the graph both modes run.

Public API::

    load_strategy(path, *, overrides=(), symbols=None, start=None, end=None) -> StrategyGraph
    load_strategy_text(text, *, file="<string>", **same) -> StrategyGraph
    compile_expr(text, *, where) -> CompiledExpr
    apply_overrides(raw, overrides, *, schema) -> (doc, origins)
    StrategyConfig, StrategyGraph
"""

from __future__ import annotations

from engine.strategy.config import StrategyConfig
from engine.strategy.expr import CompiledExpr, compile_expr
from engine.strategy.graph import StrategyGraph
from engine.strategy.load import build_graph, load_strategy, load_strategy_text
from engine.strategy.params import apply_overrides, parse_set, substitute

__all__ = [
    "CompiledExpr",
    "StrategyConfig",
    "StrategyGraph",
    "apply_overrides",
    "build_graph",
    "compile_expr",
    "load_strategy",
    "load_strategy_text",
    "parse_set",
    "substitute",
]
