"""The fusion step kernel against a plain-Python oracle, batch == live steps, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ml.ensemble import FusionRunner
from engine.strategy.ml_config import EnsembleConfig, LabelsConfig


def _logit(p):
    q = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(q / (1 - q))


def _sig(z):
    return 1 / (1 + math.exp(-z))


def _log_score(z, up):
    pz = min(max(_sig(z), 1e-6), 1 - 1e-6)
    return math.log(pz) if up else math.log(1 - pz)


def oracle(closes, probs, *, ens: EnsembleConfig, lab: LabelsConfig, aux):
    """Straight Python transcription of the formulas in engine.ml.fusion_nb's docstring."""
    n, m = probs.shape
    h, tau, cost = lab.horizon, (lab.cost_bps + lab.flat_band_bps) / 1e4, lab.cost_bps / 1e4
    k_cost = (ens.trade_cost_bps if ens.trade_cost_bps is not None else lab.cost_bps) / 1e4
    decay = 1.0 if ens.reliability_halflife is None else 0.5 ** (1 / ens.reliability_halflife)
    sk = [[0.0, 0.0, 0.0] for _ in range(m)]
    msk = [0.0, 0.0]  # the meta-learner's correction: decayed count and sum of its gain
    zbs: list[float] = []  # the pool's log-odds per bar
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
            base_old = aux[t - h, 0]
            if not (flat and lab.drop_flat) and 0 < base_old < 1:
                up = r > tau if not flat else r > 0
                for j in range(m):
                    po = probs[t - h, j]
                    if not math.isnan(po):
                        pc = min(max(po, 1e-6), 1 - 1e-6)
                        d = (math.log(pc) if up else math.log(1 - pc)) - (
                            math.log(base_old) if up else math.log(1 - base_old)
                        )
                        sk[j] = [
                            decay * sk[j][0] + 1,
                            decay * sk[j][1] + d,
                            decay * sk[j][2] + d * d,
                        ]
                meta_old = aux[t - h, 1]
                if ens.fusion == "stacked_lgbm" and not math.isnan(meta_old):
                    zo = zbs[t - h]
                    gain = _log_score(zo + meta_old, up) - _log_score(zo, up)
                    msk = [decay * msk[0] + 1, decay * msk[1] + gain]
        av = [j for j in range(m) if not math.isnan(probs[t, j])]
        base = aux[t, 0]
        w = {
            j: (max(sk[j][1] / sk[j][0], 0) if sk[j][0] >= ens.min_skill_labels else 0.0)
            for j in av
        }
        sw = sum(w.values())
        om = {j: (w[j] / sw if sw > 0 else 0.0) for j in av}
        lb = _logit(base)
        xb = sum(om[j] * (_logit(probs[t, j]) - lb) for j in av if om[j] > 0)
        a, v = aux[t, 2], aux[t, 3]
        zb = lb + a * xb / math.sqrt(1 + v * xb * xb)
        zbs.append(zb)
        p = _sig(zb)
        ok = True
        if ens.fusion == "stacked":
            c = aux[t, 4:]
            p = _sig(c[0] + sum(c[j + 1] * _logit(probs[t, j]) for j in av))
            ok = sum(abs(c[j + 1]) for j in av) > 0
        elif ens.fusion == "weighted":
            sf = sum(w_fixed[j] for j in av)
            p = sum(w_fixed[j] * probs[t, j] for j in av) / sf if sf > 0 else 0.5
            ok = sf > 0
        elif ens.fusion == "stacked_lgbm" and not math.isnan(aux[t, 1]):
            # the correction applies once its matured gain over the pool is positive
            if msk[0] >= ens.min_skill_labels and msk[1] > 0:
                p = _sig(zb + aux[t, 1])
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
        bb = mm = float("nan")
        if len(matured) >= ens.payoff_lookback:
            mm = sum(look) / len(look)
            bb = max(mm - cost, 0) / (mm + cost)
        side = 1 if p > 0.5 else (-1 if p < 0.5 else 0)
        q = max(p, 1 - p)
        ev = q * bb - (1 - q)
        edge = 1e4 * ((2 * q - 1) * mm - k_cost)
        reason = _oracle_gate(ens.gate, bool(av) and ok, bb, unc, agr, side, ev, edge)
        out.append((p, agr, dis, ent, unc, bb, ev, edge, side if reason == 0 else 0, reason))
    return out


def _oracle_gate(g, any_model, bb, unc, agr, side, ev, edge):
    """The gate's reason code: the first rule that applies (0: the gate passes)."""
    if not any_model:
        return 1
    if math.isnan(bb):
        return 5
    if unc > g.max_uncertainty:
        return 2
    if agr < g.min_agreement:
        return 3
    if side == 0 or not ev > g.min_edge:
        return 4
    if not edge > g.min_edge_bps:
        return 6
    return 0


def aux_for(n, m, *, base=0.52, meta=None, coefs=None, pool_map=(1.0, 0.0)):
    """The kernel's per-bar aux: base rate, meta correction, the pool map (slope and
    saturation), stacker coefficients."""
    aux = np.zeros((n, m + 5))
    aux[:, 0] = base
    aux[:, 1] = np.nan if meta is None else meta
    aux[:, 2], aux[:, 3] = pool_map
    if coefs is not None:
        aux[:, 4:] = coefs
    return aux


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
        EnsembleConfig(
            payoff_lookback=50,
            min_skill_labels=5,
            gate={"max_uncertainty": 0.99, "min_agreement": 0.6, "min_edge": -1.0},
        ),
        EnsembleConfig(
            payoff_lookback=30,
            reliability_halflife=40,
            fusion="bayesian",
            min_skill_labels=5,
            trade_cost_bps=0,
            gate={"min_edge": -1.0, "min_edge_bps": -5},
        ),
        EnsembleConfig(payoff_lookback=30, fusion="stacked_lgbm", min_skill_labels=5),
        EnsembleConfig(
            payoff_lookback=30, fusion="weighted", weights={"m0": 2.0, "m1": 1.0, "m2": 0.0}
        ),
        EnsembleConfig(payoff_lookback=30, fusion="stacked", gate={"min_edge": -0.5}),
    ],
)
def test_kernel_matches_python_oracle(ens):
    lab = LabelsConfig(horizon=4, cost_bps=5)
    closes, probs = data()
    n = closes.shape[0]
    rng = np.random.default_rng(5)
    coefs = np.repeat(rng.normal(0, 0.5, (1, 4)), n, axis=0)
    meta = np.where(rng.uniform(size=n) < 0.2, np.nan, rng.normal(0, 0.3, n))
    aux = aux_for(n, 3, base=0.5 + 0.05 * np.sin(np.arange(n) / 50), meta=meta, coefs=coefs)
    aux[:, 2] = 1.0 + 0.5 * np.cos(np.arange(n) / 70)  # the pool map, fold by fold
    aux[:, 3] = np.where(np.arange(n) % 140 < 70, 0.0, 4.0 + 3.0 * np.sin(np.arange(n) / 90))
    got = FusionRunner(["m0", "m1", "m2"], ens, lab).run(closes, probs, aux)
    exp = np.array(oracle(closes, probs, ens=ens, lab=lab, aux=aux), dtype=np.float64)
    keys = [
        "p",
        "agreement",
        "disagreement",
        "entropy",
        "uncertainty",
        "payoff_ratio",
        "expected_value",
        "expected_edge_bps",
    ]
    for j, k in enumerate(keys):
        np.testing.assert_allclose(got[k], exp[:, j], rtol=1e-9, atol=1e-9, err_msg=k)
    np.testing.assert_array_equal(got["direction"], exp[:, 8])
    np.testing.assert_array_equal(got["gate_code"], exp[:, 9])
    if ens.fusion == "bayesian":
        assert (got["weights"].sum(axis=1) > 0).any()  # members earned weight on the way


def test_batch_equals_live_steps():
    ens, lab = EnsembleConfig(payoff_lookback=40), LabelsConfig(horizon=3)
    closes, probs = data(400)
    coefs = aux_for(400, 3)
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
    a = FusionRunner(["a", "b"], ens, lab).run(closes, probs, aux_for(300, 2))
    b = FusionRunner(["a", "b", "c"], ens, lab).run(closes, with_nan, aux_for(300, 3))
    for k in ("p", "agreement", "uncertainty", "direction", "gate_code"):
        np.testing.assert_array_equal(a[k], b[k])
    assert (b["weights"][:, 2] == 0).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 0.99), min_size=1, max_size=5), st.integers(0, 10_000))
def test_bayesian_p_lies_between_the_base_rate_and_the_members(ps, seed):
    ens = EnsembleConfig(payoff_lookback=10, min_skill_labels=3, gate={"min_edge": -1.0})
    lab = LabelsConfig(horizon=2, cost_bps=0)
    rng = np.random.default_rng(seed)
    n = 60
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    probs = rng.uniform(0.05, 0.95, (n, len(ps)))
    probs[-1] = ps
    base = 0.5
    r = FusionRunner([f"m{i}" for i in range(len(ps))], ens, lab).run(
        closes, probs, aux_for(n, len(ps), base=base)
    )
    assert min([*ps, base]) - 1e-12 <= r["p"][-1] <= max([*ps, base]) + 1e-12
    assert 0 <= r["uncertainty"][-1] <= 1 and 0 <= r["agreement"][-1] <= 1
    np.testing.assert_allclose(r["weights"][-1].sum() + r["base_weight"][-1], 1.0, atol=1e-12)
    if r["direction"][-1] != 0:  # a trade needs a positive net edge and passing gates
        assert r["expected_edge_bps"][-1] > 0 and r["gate_code"][-1] == 0


def _walk(seed, n):
    """A random walk's closes, whether each bar's next close is higher, and the generator."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.01, n)
    return 100 * np.exp(np.cumsum(r)), np.r_[r[1:] > 0, False], rng


def test_members_without_skill_leave_the_base_rate():
    """Members that forecast the opposite of what happens earn no weight: the fused
    forecast is the base rate and nothing trades; a skilled member takes all the weight."""
    lab = LabelsConfig(horizon=1, cost_bps=0)
    ens = EnsembleConfig(payoff_lookback=10, min_skill_labels=5, gate={"min_edge": -1.0})
    n = 400
    closes, up_next, _ = _walk(3, n)
    good = np.where(up_next, 0.6, 0.4)
    bad = np.where(up_next, 0.3, 0.7)
    out = FusionRunner(["good", "bad"], ens, lab).run(
        closes, np.column_stack([good, bad]), aux_for(n, 2, base=0.5)
    )
    assert (out["weights"][50:, 1] == 0).all() and (out["weights"][50:, 0] == 1).all()
    np.testing.assert_allclose(out["p"][50:], good[50:], atol=1e-9)
    only_bad = FusionRunner(["bad"], ens, lab).run(closes, bad[:, None], aux_for(n, 1, base=0.5))
    assert (only_bad["p"][50:] == 0.5).all() and (only_bad["direction"][50:] == 0).all()
    assert (only_bad["base_weight"][50:] == 1).all()


def test_stacked_lgbm_correction_applies_only_while_it_beats_the_pool():
    """The meta-learner's correction earns its place as a member does: one that pushes
    toward what does not happen is never applied (stacked_lgbm forecasts the bayesian pool,
    bar for bar); one that pushes toward what happens is applied once ``min_skill_labels``
    of its gain have matured, and stops being applied after it turns wrong."""
    lab = LabelsConfig(horizon=1, cost_bps=0)
    kw = dict(payoff_lookback=10, min_skill_labels=5, gate={"min_edge": -1.0})
    n = 400
    closes, up_next, rng = _walk(4, n)
    probs = np.column_stack([np.where(up_next, 0.55, 0.45), rng.uniform(0.4, 0.6, n)])
    pool = FusionRunner(["a", "b"], EnsembleConfig(**kw), lab).run(
        closes, probs, aux_for(n, 2, base=0.5)
    )
    stacked = EnsembleConfig(**kw, fusion="stacked_lgbm")
    right = np.where(up_next, 0.4, -0.4)
    wrong = -right
    bad = FusionRunner(["a", "b"], stacked, lab).run(
        closes, probs, aux_for(n, 2, base=0.5, meta=wrong)
    )
    np.testing.assert_array_equal(bad["p"], pool["p"])
    good = FusionRunner(["a", "b"], stacked, lab).run(
        closes, probs, aux_for(n, 2, base=0.5, meta=right)
    )
    applied = good["p"] != pool["p"]
    assert not applied[:5].any() and applied[5:].all()  # 5 labels matured by bar 5
    turned = np.r_[right[:200], wrong[200:]]
    recent = stacked.model_copy(update={"reliability_halflife": 20})  # forgets its past gain
    late = FusionRunner(["a", "b"], recent, lab).run(
        closes, probs, aux_for(n, 2, base=0.5, meta=turned)
    )
    used = late["p"] != late["pool_p"]
    assert used[50:200].all() and not used[300:].any()


def test_net_edge_gate_counts_fees_and_slippage():
    lab = LabelsConfig(horizon=2, cost_bps=0)
    closes, probs = data(300, nan_frac=0.0)
    base = dict(payoff_lookback=20, min_skill_labels=1, gate={"min_edge": -1.0})
    free = FusionRunner(list("abc"), EnsembleConfig(**base, trade_cost_bps=0), lab).run(
        closes, probs, aux_for(300, 3, base=0.5)
    )
    dear = FusionRunner(list("abc"), EnsembleConfig(**base, trade_cost_bps=10_000), lab).run(
        closes, probs, aux_for(300, 3, base=0.5)
    )
    diff = free["expected_edge_bps"] - dear["expected_edge_bps"]
    np.testing.assert_allclose(diff[30:], 10_000, rtol=1e-9)
    assert (dear["direction"] == 0).all() and (dear["gate_code"] == 6).any()


def test_gate_thresholds_make_it_flat():
    lab = LabelsConfig(horizon=2)
    closes, probs = data(300, nan_frac=0.0)
    z = aux_for(300, 3)
    strict = FusionRunner(
        list("abc"), EnsembleConfig(payoff_lookback=20, gate={"max_uncertainty": 0.0}), lab
    ).run(closes, probs, z)
    assert (strict["direction"] == 0).all() and set(np.unique(strict["gate_code"])) <= {1, 2, 5}
    agree = FusionRunner(
        list("abc"), EnsembleConfig(payoff_lookback=20, gate={"min_agreement": 1.0}), lab
    ).run(closes, probs, z)
    assert (agree["agreement"][agree["direction"] != 0] == 1.0).all()
    assert (agree["gate_code"] == 3).any()
