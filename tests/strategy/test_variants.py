"""GraphVariants (a sweep's many graphs of one document) equals build_graph, field for field,
error for error."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import ConfigError
from engine.strategy.execution import strategy_hash
from engine.strategy.load import GraphVariants, build_graph
from engine.strategy.yamlio import load_yaml_text

DOC = """\
name: t
params: {fast: 9, slow: 50, low: 30.5, on: true, tag: x}
data:
  symbols: [BTCUSDT]
  interval: 5m
  start: 2024-01-01
  end: 2024-01-31
features: ["ema_{fast}"]
signals:
  long: ema_{fast} > ema_{slow} and rsi_14 > {low}
  short: ema_{fast} < ema_{slow}
risk: {sizing: fixed, fraction: 0.5}
execution: {leverage: 2, stop_loss: {atr: 2.0, atr_period: 14}}
"""

VARIANTS: list[dict[str, Any]] = [
    {"fast": 5, "slow": 20},
    {"fast": 12, "slow": 26},
    {"fast": 12.0, "slow": 30},  # a whole float for an int param: coerced to 12
    {"fast": 7, "slow": 20, "low": 25},  # an int for a float param
    {"fast": 7, "risk.fraction": 0.25},  # a dotted key: the whole path
    {"fast": 8, "slow": 21},  # params only again, after a dotted variant
    {"on": False, "tag": "y"},  # other params, fewer keys
    {"fast": 8, "slow": 21, "execution.leverage": 3},
]


def _same(a: Any, b: Any) -> None:
    assert a == b
    assert a.config.model_dump() == b.config.model_dump()
    assert a.config.model_fields_set == b.config.model_fields_set
    assert type(a.config.params["fast"]) is type(b.config.params["fast"])
    assert strategy_hash(a) == strategy_hash(b)
    assert {k: r.text for k, r in a.rules.items()} == {k: r.text for k, r in b.rules.items()}


@pytest.mark.parametrize(
    ("base", "cli"),
    [
        ({}, {}),
        ({"slow": 40, "risk.fraction": 0.1}, {}),
        ({}, {"symbols": ["ETHUSDT"], "start": "2024-01-05", "end": "2024-01-20"}),
    ],
)
def test_every_variant_equals_build_graph(base: dict[str, Any], cli: dict[str, Any]) -> None:
    raw, smap = load_yaml_text(DOC, file="t.yaml")
    variants = GraphVariants(raw, smap, overrides=base, **cli)
    for v in VARIANTS:
        if set(v) & set(base):
            continue
        expected = build_graph(raw, smap, overrides={**base, **v}, **cli)
        _same(variants.graph(v), expected)


BAD: list[dict[str, Any]] = [
    {"fast": 0, "slow": 20},  # ema_0: the catalogue's error, at the feature's line
    {"fast": "ten", "slow": 20},  # a text for an int param
    {"fast": 1.5, "slow": 20},  # not a whole number
    {"fast": None, "slow": 20},  # a param needs a value
    {"fats": 5, "slow": 20},  # unknown param, with the closest one
    {"fast": True, "slow": 20},  # true/false for a number
]


@pytest.mark.parametrize("bad", BAD)
def test_a_bad_variant_raises_build_graphs_error(bad: dict[str, Any]) -> None:
    raw, smap = load_yaml_text(DOC, file="t.yaml")
    variants = GraphVariants(raw, smap)
    variants.graph({"fast": 5, "slow": 20})  # the first, checked in full
    with pytest.raises(ConfigError) as want:
        build_graph(raw, smap, overrides=bad)
    with pytest.raises(ConfigError) as got:
        variants.graph(bad)
    assert (got.value.message, got.value.hint) == (want.value.message, want.value.hint)
    # and the variants after it are unharmed
    _same(
        variants.graph({"fast": 6, "slow": 30}),
        build_graph(raw, smap, overrides={"fast": 6, "slow": 30}),
    )


def test_params_only_variants_share_the_first_configs_sections() -> None:
    """What makes a sweep's graphs cheap: a params variant reuses the validated sections."""
    raw, smap = load_yaml_text(DOC, file="t.yaml")
    variants = GraphVariants(raw, smap)
    a = variants.graph({"fast": 5, "slow": 20})
    b = variants.graph({"fast": 6, "slow": 21})
    assert b.config.execution is a.config.execution and b.config.data is a.config.data
    c = variants.graph({"fast": 6, "risk.fraction": 0.2})  # a dotted key: checked in full
    assert c.config.execution is not a.config.execution


def test_a_document_that_is_not_a_mapping_raises_the_loaders_error() -> None:
    raw, smap = load_yaml_text("- a\n- b\n", file="t.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        GraphVariants(raw, smap).graph({"fast": 5})
