"""Loading strategies: the shipped files, params and overrides, line-aware errors, the rule kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.strategy import load_strategy, load_strategy_text
from engine.strategy.execution import strategy_hash
from engine.strategy.load import GraphVariants, build_graph
from engine.strategy.params import parse_set, substitute
from engine.strategy.rules_nb import rule_fold_nb, rule_fold_py
from engine.strategy.yamlio import load_yaml_text
from engine.timeutil import parse_time

REPO = Path(__file__).resolve().parents[2]
BASE = """\
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
"""


def test_shipped_strategies_load() -> None:
    g = load_strategy(REPO / "strategies/ema_cross.yaml")
    assert g.symbols == ("BTCUSDT", "ETHUSDT") and g.interval == "5m"
    assert g.rules["long"].text == "ema_9 > ema_50" and g.rules["short"].text == "ema_9 < ema_50"
    assert g.feature_columns == ("ema_9", "ema_50")
    r = load_strategy(REPO / "strategies/rsi_reversion.yaml")
    assert set(r.rules) == {"long_entry", "long_exit", "short_entry", "short_exit"}
    assert "ema_50_1h" in r.feature_columns and r.lookback == 2
    assert r.config.data.end == parse_time("2024-05-14T07:55")


def test_params_resolve_everywhere() -> None:
    g = load_strategy_text(BASE)
    assert g.rules["long"].text == "ema_9 > ema_50 and rsi_14 > 30.5"
    assert g.features == ("ema_9", "ema_50", "rsi_14")
    assert g.config.data.start == parse_time("2024-01-01")
    assert g.config.data.end == parse_time("2024-01-31T23:59:59.999")
    resolved = g.resolved()
    assert resolved["signals_resolved"]["long"] == "ema_9 > ema_50 and rsi_14 > 30.5"
    assert resolved["params"]["fast"] == 9


def test_set_overrides_params_and_paths() -> None:
    g = load_strategy_text(
        BASE, overrides=["fast=12", "low=25", "risk.fraction=0.3", "data.interval=15m"]
    )
    assert g.rules["long"].text == "ema_12 > ema_50 and rsi_14 > 25.0"
    assert g.config.risk.fraction == 0.3 and g.interval == "15m"
    assert g.overrides == ("fast=12", "low=25", "risk.fraction=0.3", "data.interval=15m")
    # null switches an optional key off
    g0 = load_strategy_text(
        BASE + "execution: {stop_loss: {pct: 2}}\n", overrides=["execution.stop_loss=null"]
    )
    assert g0.config.execution.stop_loss is None
    # a mapping works too (sweeps)
    g2 = load_strategy_text(BASE, overrides={"fast": 20})
    assert g2.rules["long"].text.startswith("ema_20 >")
    # CLI replacements of data keys
    g3 = load_strategy_text(BASE, symbols=["ETHUSDT"], start="2024-01-10", end="2024-01-11")
    assert g3.symbols == ("ETHUSDT",) and g3.config.data.start == parse_time("2024-01-10")


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["fats=1"], "--set fats=1: unknown param 'fats'"),
        (["fast"], "expected name=value"),
        (["fast="], "no value given"),
        (["fast=null"], "a param needs a value"),
        (["data.symbols=null"], "data.symbols: expected a list"),
        (["fast=1.5"], "param 'fast' is a whole number (9), got 1.5"),
        (["on=3"], "param 'on' is true/false"),
        (["low=abc"], "param 'low' is a number"),
        (["risk.fractoin=0.1"], "unknown key 'fractoin' in risk"),
        (["risk.fraction.x=1"], "risk.fraction has no keys"),
        (["risk.fraction=0"], "--set risk.fraction=0: risk.fraction: must be in (0, 1], got 0"),
        (["data.interval=7m"], "unknown interval '7m'"),
        (["9x=1"], "is not a param name or dotted config path"),
    ],
)
def test_bad_overrides(sets: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_strategy_text(BASE, overrides=sets)
    assert fragment in str(info.value)


def test_cli_replacement_errors_name_the_option() -> None:
    with pytest.raises(ConfigError) as info:
        load_strategy_text(BASE, start="2024-02-05")
    assert "--start 2024-02-05: data.start: start (2024-02-05 00:00) is after end" in str(
        info.value
    )
    with pytest.raises(ConfigError) as info:
        load_strategy_text(BASE, symbols=["DOGEUSDT"])
    assert (
        "--symbols DOGEUSDT: data.symbols[0]: symbol 'DOGEUSDT' is not in the exchangeInfo snapshot"
        in str(info.value)
    )


def test_live_mode_leaves_the_symbols_to_the_venue() -> None:
    """The shipped snapshot lists only the shipped data's symbols: live mode checks a symbol
    against the venue it trades on (at start), so loading does not refuse it."""
    graph = load_strategy_text(BASE, symbols=["DOGEUSDT"], venue_symbols=True)
    assert graph.symbols == ("DOGEUSDT",)


def test_several_problems_are_listed_with_lines() -> None:
    text = "name: t\ndata:\n  symbols: [BTCUSDT]\n  interval: 5m\nsignals: {long: close > 1}\nrisk:\n  fraction: 2\nexecution:\n  taker_fee: -1\n"
    with pytest.raises(ConfigError) as info:
        load_strategy_text(text, file="s.yaml")
    msg = str(info.value)
    assert "2 problems" in msg
    assert "s.yaml:7: risk.fraction: must be in (0, 1], got 2" in msg
    assert "s.yaml:9: execution.taker_fee: must be in [0, 0.01], got -1" in msg


def test_ml_sections_are_accepted_and_exclusive_with_signals() -> None:
    ml = "name: t\ndata: {symbols: [BTCUSDT], interval: 5m}\nfeatures: [rsi_14]\nmodels:\n  - {kind: lightgbm}\nrisk: {sizing: kelly}\n"
    g = load_strategy_text(ml)
    assert g.config.ml() is not None and g.rules == {}
    with pytest.raises(ConfigError, match="give either signals"):
        load_strategy_text(ml + "signals: {long: rsi_14 > 50}\n")
    with pytest.raises(ConfigError, match="'kelly' needs a model probability"):
        load_strategy_text(BASE + "risk: {sizing: kelly}\n")
    with pytest.raises(ConfigError, match="models: required when ensemble is given"):
        load_strategy_text(BASE + "ensemble: {fusion: bayesian}\n")


def test_substitute_and_parse_set() -> None:
    assert substitute("x_{a}_{b}", {"a": 1, "b": "z"}, where="w") == "x_1_z"
    assert substitute("{f} > 1", {"f": 2.0}, where="w") == "2.0 > 1"
    assert (
        parse_set("a=0.5") == ("a", 0.5)
        and parse_set("a=true") == ("a", True)
        and parse_set("a=x") == ("a", "x")
    )
    with pytest.raises(ConfigError, match="unbalanced brace"):
        substitute("ema_{fast", {"fast": 1}, where="w")


bits = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    min_size=1,
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(rows=bits, events=st.booleans())
def test_rule_fold_matches_python_oracle(rows: list[tuple[bool, ...]], events: bool) -> None:
    cols = [np.array([r[i] for r in rows], dtype=np.bool_) for i in range(5)]
    s1, d1 = rule_fold_nb(*cols, events)
    s2, d2 = rule_fold_py(*cols, events)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(d1, d2)


def test_rule_fold_cases() -> None:
    t, f = True, False
    le = np.array([f, t, f, f, f, f])
    lx = np.array([f, f, f, t, f, f])
    se = np.array([f, f, f, f, t, f])
    sx = np.array([f, f, f, f, f, t])
    has = np.ones(6, dtype=np.bool_)
    state, d = rule_fold_nb(le, lx, se, sx, has, True)
    assert state.tolist() == [0, 1, 1, 0, -1, 0]
    assert (
        np.isnan(d[0])
        and d[1:].tolist()[0] == 1.0
        and np.isnan(d[2])
        and d[3:].tolist() == [0.0, -1.0, 0.0]
    )
    # flip long -> short in one bar; a gap keeps the state and decides nothing
    has[2] = False
    state, d = rule_fold_nb(le, lx, np.array([f, f, f, t, f, f]), sx, has, False)
    assert state.tolist() == [0, 1, 1, -1, -1, 0] and np.isnan(d[2]) and d[3] == -1.0


# -- GraphVariants (a sweep's many graphs of one document) equals build_graph, field for
# field, error for error


# BASE with a short rule and the sections a dotted axis sets
VARIANT_DOC = (
    BASE
    + """\
  short: ema_{fast} < ema_{slow}
risk: {sizing: fixed, fraction: 0.5}
execution: {leverage: 2, stop_loss: {atr: 2.0, atr_period: 14}}
"""
)

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
    raw, smap = load_yaml_text(VARIANT_DOC, file="t.yaml")
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
    raw, smap = load_yaml_text(VARIANT_DOC, file="t.yaml")
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
    raw, smap = load_yaml_text(VARIANT_DOC, file="t.yaml")
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



_YAML_FILES = sorted(Path(__file__).parents[2].glob("strategies/*.yaml")) + sorted(
    (Path(__file__).parent / "bad").glob("*.yaml")
)


@pytest.mark.parametrize("path", _YAML_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_libyaml_and_pyyaml_read_a_file_alike(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast parser (libyaml) and PyYAML's own give the same data and source map, or the
    same error (a file libyaml rejects is parsed again by PyYAML for its message)."""
    import yaml

    from engine.strategy import yamlio

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML built without libyaml")
    assert yamlio._LOADERS[0] is yaml.CSafeLoader

    def read() -> Any:
        try:
            return yamlio.load_yaml_text(path.read_text(), file=str(path))
        except ConfigError as err:
            return ("error", err.message, err.hint)

    fast = read()
    monkeypatch.setattr(yamlio, "_LOADERS", (yaml.SafeLoader,))
    assert fast == read()
