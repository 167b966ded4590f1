"""The fusion step kernel against a plain-Python oracle, batch == live steps, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ml.ensemble import FusionRunner
from engine.strategy.ml_config import EnsembleConfig, LabelsConfig


def oracle(closes, probs, *, ens: EnsembleConfig, lab: LabelsConfig, coefs=None):
    """Straight Python transcription of the formulas in engine.ml.fusion_nb's docstring."""
    n, m = probs.shape
    h, tau, cost = lab.horizon, (lab.cost_bps + lab.flat_band_bps) / 1e4, lab.cost_bps / 1e4
    pa, pb = ens.reliability_prior
    decay = 1.0 if ens.reliability_halflife is None else 0.5 ** (1 / ens.reliability_halflife)
    a, b = [pa] * m, [pb] * m
    matured: list[float] = []
    w_fixed = [
        float((ens.weights or {}).get(f"m{j}", 1.0 if not ens.weights else 0.0)) for j in range(m)
    ]
    out = []
    for t in range(n):
        if t >= h:
            r = math.log(closes[t] / closes[t - h])
            matured.append(abs(r))
            flat = abs(r) <= tau
            if not (flat and lab.drop_flat):
                up = r > tau if not flat else r > 0
                for j in range(m):
                    po = probs[t - h, j]
                    if not math.isnan(po) and po != 0.5:
                        hit = 1.0 if (po > 0.5) == up else 0.0
                        a[j] = pa + decay * (a[j] - pa) + hit
                        b[j] = pb + decay * (b[j] - pb) + 1 - hit
        av = [j for j in range(m) if not math.isnan(probs[t, j])]
        logit = lambda p: math.log(min(max(p, 1e-6), 1 - 1e-6) / (1 - min(max(p, 1e-6), 1 - 1e-6)))  # noqa: E731
        if ens.fusion == "stacked":
            c = coefs[t]
            z = c[0] + sum(c[j + 1] * logit(probs[t, j]) for j in av)
            sw = sum(abs(c[j + 1]) for j in av)
            p = 1 / (1 + math.exp(-z)) if av else 0.5
        else:
            ws = {}
            for j in av:
                if ens.fusion == "bayesian":
                    mean = a[j] / (a[j] + b[j])
                    sd = math.sqrt(a[j] * b[j] / ((a[j] + b[j]) ** 2 * (a[j] + b[j] + 1)))
                    ws[j] = 0.5 * (1 + math.erf((mean - 0.5) / (sd * math.sqrt(2))))
                else:
                    ws[j] = w_fixed[j]
            sw = sum(ws.values())
            if sw > 0 and ens.fusion == "bayesian":
                p = 1 / (1 + math.exp(-sum(ws[j] * logit(probs[t, j]) for j in av) / sw))
            elif sw > 0:
                p = sum(ws[j] * probs[t, j] for j in av) / sw
            else:
                p = 0.5
        vals = [probs[t, j] for j in av]
        dis = float(np.std(vals)) if vals else 0.0
        agr = (
            sum(1 for v in vals if (v > 0.5 and p > 0.5) or (v < 0.5 and p < 0.5)) / len(vals)
            if vals
            else 0.0
        )
        pc = min(max(p, 1e-12), 1 - 1e-12)
        ent = -(pc * math.log2(pc) + (1 - pc) * math.log2(1 - pc))
        unc = 1 - (1 - ent) * (1 - 2 * min(dis, 0.5))
        look = matured[-ens.payoff_lookback :]
        bb = float("nan")
        if len(matured) >= ens.payoff_lookback:
            mm = sum(look) / len(look)
            bb = max(mm - cost, 0) / (mm + cost)
        side = 1 if p > 0.5 else (-1 if p < 0.5 else 0)
        q = max(p, 1 - p)
        ev = q * bb - (1 - q)
        reason = _oracle_gate(ens.gate, bool(av), sw, bb, unc, agr, side, ev)
        out.append((p, agr, dis, ent, unc, bb, ev, side if reason == 0 else 0, reason))
    return out


def _oracle_gate(g, any_model, sw, bb, unc, agr, side, ev):
    """The gate's reason code: the first rule that applies (0: the gate passes)."""
    if not any_model or sw <= 0:
        return 1
    if math.isnan(bb):
        return 5
    if unc > g.max_uncertainty:
        return 2
    if agr < g.min_agreement:
        return 3
    if side == 0 or not ev > g.min_edge:
        return 4
    return 0


def data(n=600, m=3, seed=0, nan_frac=0.1):
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    probs = rng.uniform(0.2, 0.8, (n, m))
    probs[rng.uniform(size=(n, m)) < nan_frac] = np.nan
    probs[:20] = np.nan
    return closes, probs


@pytest.mark.parametrize(
    "ens",
    [
        EnsembleConfig(payoff_lookback=50, gate={"max_uncertainty": 0.99, "min_agreement": 0.6}),
        EnsembleConfig(payoff_lookback=30, reliability_halflife=40, fusion="bayesian"),
        EnsembleConfig(
            payoff_lookback=30, fusion="weighted", weights={"m0": 2.0, "m1": 1.0, "m2": 0.0}
        ),
        EnsembleConfig(payoff_lookback=30, fusion="stacked", gate={"min_edge": -0.5}),
    ],
)
def test_kernel_matches_python_oracle(ens):
    lab = LabelsConfig(horizon=4, cost_bps=5)
    closes, probs = data()
    rng = np.random.default_rng(5)
    coefs = np.repeat(rng.normal(0, 0.5, (1, 4)), closes.shape[0], axis=0)
    got = FusionRunner(["m0", "m1", "m2"], ens, lab).run(closes, probs, coefs)
    exp = np.array(oracle(closes, probs, ens=ens, lab=lab, coefs=coefs), dtype=np.float64)
    keys = [
        "p",
        "agreement",
        "disagreement",
        "entropy",
        "uncertainty",
        "payoff_ratio",
        "expected_value",
    ]
    for j, k in enumerate(keys):
        np.testing.assert_allclose(got[k], exp[:, j], rtol=1e-12, atol=1e-12, err_msg=k)
    np.testing.assert_array_equal(got["direction"], exp[:, 7])
    np.testing.assert_array_equal(got["gate_code"], exp[:, 8])
    assert (got["gate_code"] == 0).any() or ens.fusion == "weighted"


def test_batch_equals_live_steps():
    ens, lab = EnsembleConfig(payoff_lookback=40), LabelsConfig(horizon=3)
    closes, probs = data(400)
    coefs = np.zeros((400, 4))
    batch = FusionRunner(["a", "b", "c"], ens, lab).run(closes, probs, coefs)
    live = FusionRunner(["a", "b", "c"], ens, lab)
    warm = live.run(closes[:250], probs[:250], coefs[:250])  # warm up in batch, then step
    np.testing.assert_array_equal(warm["p"], batch["p"][:250])
    for t in range(250, 400):
        r = live.step(closes[t], probs[t], coefs[t])
        assert r["p"] == batch["p"][t] and r["direction"] == batch["direction"][t]
        assert (
            r["uncertainty"] == batch["uncertainty"][t] and r["gate_code"] == batch["gate_code"][t]
        )


def test_abstaining_model_is_excluded():
    ens, lab = EnsembleConfig(payoff_lookback=40), LabelsConfig(horizon=3)
    closes, probs = data(300, m=2, nan_frac=0.0)
    with_nan = np.column_stack([probs, np.full(300, np.nan)])
    a = FusionRunner(["a", "b"], ens, lab).run(closes, probs, np.zeros((300, 3)))
    b = FusionRunner(["a", "b", "c"], ens, lab).run(closes, with_nan, np.zeros((300, 4)))
    for k in ("p", "agreement", "uncertainty", "direction", "gate_code"):
        np.testing.assert_array_equal(a[k], b[k])
    assert (b["weights"][:, 2] == 0).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 0.99), min_size=1, max_size=5), st.integers(0, 10_000))
def test_bayesian_p_lies_between_the_models(ps, seed):
    ens, lab = EnsembleConfig(payoff_lookback=10), LabelsConfig(horizon=2)
    rng = np.random.default_rng(seed)
    n = 60
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    probs = rng.uniform(0.05, 0.95, (n, len(ps)))
    probs[-1] = ps
    r = FusionRunner([f"m{i}" for i in range(len(ps))], ens, lab).run(
        closes, probs, np.zeros((n, len(ps) + 1))
    )
    assert min(ps) - 1e-12 <= r["p"][-1] <= max(ps) + 1e-12
    assert 0 <= r["uncertainty"][-1] <= 1 and 0 <= r["agreement"][-1] <= 1
    np.testing.assert_allclose(r["weights"][-1].sum(), 1.0, atol=1e-12)
    if r["direction"][-1] != 0:  # a trade needs a positive edge and passing gates
        assert r["expected_value"][-1] > 0 and r["gate_code"][-1] == 0


def test_gate_thresholds_make_it_flat():
    lab = LabelsConfig(horizon=2)
    closes, probs = data(300, nan_frac=0.0)
    z = np.zeros((300, 4))
    strict = FusionRunner(
        list("abc"), EnsembleConfig(payoff_lookback=20, gate={"max_uncertainty": 0.0}), lab
    ).run(closes, probs, z)
    assert (strict["direction"] == 0).all() and set(np.unique(strict["gate_code"])) <= {1, 2, 5}
    agree = FusionRunner(
        list("abc"), EnsembleConfig(payoff_lookback=20, gate={"min_agreement": 1.0}), lab
    ).run(closes, probs, z)
    assert (agree["agreement"][agree["direction"] != 0] == 1.0).all()
    assert (agree["gate_code"] == 3).any()
