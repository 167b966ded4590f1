"""The per-bar ensemble step kernel: skill update, fusion, uncertainty, payoff, net edge, gate.

Imports only numpy and engine.kernels. ``fuse_step_nb(state, params, close, probs, fixed_w, aux,
w_out)`` advances one closed bar; ``fuse_batch_nb`` folds it over a whole segment (the batch
path is that fold, nothing else). Live mode calls the step once per closed bar: O(1) per bar.

Per bar t, with calibrated member probabilities ``p_m`` (NaN = abstain) and ``aux`` =
``[base, meta, a, v, c_0, c_1..c_M]`` (:func:`aux_width` wide): the base rate ``base`` of
up-labels known at the fold's cutoff, the stacked LightGBM's log-odds correction ``meta`` (NaN
when it has none), the pool map's slope ``a`` and saturation ``v`` fitted at the cutoff
(:func:`engine.ml.ensemble.fit_pool_map`; ``(1, 0)``, the identity, until it is fitted) and
the logistic stacker's coefficients:

1. Maturing label: bar ``t-h``'s label is known at the close of bar t:
   ``r = log(close_t / close_{t-h})`` (or simple). Its ``|r|`` enters the payoff ring
   (last ``L`` matured bars). Unless it is flat (``|r| <= tau`` with flat dropped) each member
   that forecast bar ``t-h`` adds its log-score skill over that bar's base rate,
   ``d = log p_m(y) - log base(y)`` (nats), to its decayed sums ``(n, sum d, sum d^2)``
   (``s <- decay * s + (1, d, d^2)``, decay from ``reliability_halflife``).
2. Skill weights: ``w_m = max(sum d / n, 0)``, the member's recent mean log-score gain over
   the base rate (0 until ``n`` reaches ``min_skill_n`` decayed labels), for the available
   members; ``omega_m = w_m / sum w``. With no member of positive skill (or none available)
   every ``omega`` is 0 and the forecast is the base rate (``base_weight`` 1, else 0).
3. Fusion over the members with a finite p:

   - bayesian (0): ``logit p = logit base + g(x)`` with
     ``x = sum omega_m (logit p_m - logit base)`` (``pool_x``): a log-odds pool that falls back
     on the base rate as skill fades, through the pool map
     ``g(x) = a * x / sqrt(1 + v * x^2)`` (:func:`pool_map_nb`): ``a > 1`` extremizes the
     average of the members' log-odds (an average of calibrated forecasts that carry partly
     independent evidence is underconfident), ``v > 0`` bounds it at ``a / sqrt(v)`` (the
     tails, where a regime the members did not see makes them confidently wrong);
   - weighted (1): linear pool ``p = sum w_m p_m / sum w_m`` with fixed weights;
   - stacked (2): ``p = sigmoid(c_0 + sum c_m logit p_m)`` with the meta-learner's
     coefficients (an abstaining model enters as ``p = 1/2``);
   - stacked_lgbm (3): ``logit p = logit pool + meta``, the bayesian pool corrected by the
     meta-learner, while the correction earns its place as a member does: its log-score gain
     over the pool on matured labels, ``d = log p_corrected(y) - log pool(y)`` of bar ``t-h``,
     is decayed into ``meta_skill`` like a member's skill (every bar with a finite ``meta``,
     applied or not), and the correction is applied only once ``meta_skill`` holds
     ``min_skill_n`` labels with a positive sum (the pool itself otherwise, and where ``meta``
     is NaN).

   ``pool_p``, the bayesian pool, is an output whatever the method (the meta-learner's
   offset).
4. ``disagreement`` = population std of the p_m; ``agreement`` = share of the models whose
   side (p_m > 1/2) is the fused side; ``entropy`` = binary entropy of p in bits;
   ``uncertainty = 1 - (1 - entropy) * (1 - 2 * disagreement)`` (in [0, 1]).
5. Payoff: ``m`` the mean ``|r|`` of the last ``L`` matured bars (NaN until ``L`` matured);
   ratio ``b = max(m - c, 0) / (m + c)`` with the labels' round-trip cost ``c``.
6. Side = sign(p - 1/2), ``q = max(p, 1 - p)``; ``ev = q * b - (1 - q)``; expected net return
   of the round trip in bps ``edge = 1e4 * ((2q - 1) * m - k)``, ``k`` the configured fees and
   slippage of a round trip (a bet held h bars gains ``|r|`` when right, loses it when wrong).
7. Gate (first that applies): 1 no_models (none available, or a fixed/stacked pool with zero
   weight), 5 no_payoff (m unknown), 2 uncertainty > max, 3 agreement < min, 4 ev <= min_edge,
   6 net_edge (edge <= min_edge_bps). Direction is the side when the gate passes (reason 0),
   else 0 (flat).

Oracle: a plain-Python loop over the same formulas (tests/ml/test_fusion.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from engine.kernels import kernel

BAYESIAN, WEIGHTED, STACKED, STACKED_LGBM = 0, 1, 2, 3
GATE_REASONS = ("", "no_models", "uncertainty", "agreement", "edge", "no_payoff", "net_edge")
_EPS = 1e-6
#: aux layout: base rate, stacked LightGBM log-odds correction, the pool map's slope and
#: saturation, the logistic stacker's coefs
AUX_BASE, AUX_META, AUX_SLOPE, AUX_SAT, AUX_COEF = 0, 1, 2, 3, 4


def aux_width(n_models: int) -> int:
    """Columns of the kernel's per-bar ``aux`` for ``n_models`` members."""
    return AUX_COEF + 1 + n_models


def aux_before_cutoff(n: int, n_models: int) -> np.ndarray:
    """``aux`` of ``n`` bars before the first cutoff: no base rate (the fusion abstains), no
    meta-learner correction, the identity pool map, zero stacker coefficients."""
    aux = np.zeros((n, aux_width(n_models)))
    aux[:, AUX_BASE] = np.nan
    aux[:, AUX_META] = np.nan
    aux[:, AUX_SLOPE] = 1.0
    return aux


class FusionState(NamedTuple):
    closes: np.ndarray  # (h+1,) ring of closes
    probs: np.ndarray  # (h+1, M) ring of calibrated probabilities
    bases: np.ndarray  # (h+1,) ring of base rates
    skill: np.ndarray  # (M, 3) decayed [count, sum d, sum d^2] of log-score skill
    rets: np.ndarray  # (L,) ring of matured |r|
    counters: np.ndarray  # int64 [bars seen, matured returns, ring position]
    sums: np.ndarray  # float64 [sum of |r| in the ring]
    pools: np.ndarray  # (h+1,) ring of the bayesian pool's log-odds
    metas: np.ndarray  # (h+1,) ring of the meta-learner's corrections (NaN: none)
    meta_skill: np.ndarray  # (3,) decayed [count, sum d, sum d^2] of the correction's gain


class FusionParams(NamedTuple):
    method: int
    horizon: int
    tau: float
    cost: float
    drop_flat: bool
    log_returns: bool
    decay: float
    max_uncertainty: float
    min_agreement: float
    min_edge: float
    trade_cost: float
    min_edge_bps: float
    min_skill_n: float


def new_state(n_models: int, *, horizon: int, lookback: int) -> FusionState:
    """A fresh state (before the run's first bar)."""
    return FusionState(
        closes=np.full(horizon + 1, np.nan),
        probs=np.full((horizon + 1, n_models), np.nan),
        bases=np.full(horizon + 1, np.nan),
        skill=np.zeros((n_models, 3)),
        rets=np.zeros(lookback),
        counters=np.zeros(3, dtype=np.int64),
        sums=np.zeros(1),
        pools=np.full(horizon + 1, np.nan),
        metas=np.full(horizon + 1, np.nan),
        meta_skill=np.zeros(3),
    )


@kernel
def _logit_nb(p: float) -> float:
    q = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(q / (1.0 - q))


@kernel
def _sigmoid_nb(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@kernel
def pool_map_nb(x: float, a: float, v: float) -> float:
    """The pool map ``a * x / sqrt(1 + v * x^2)``; ``x`` itself for the identity ``(1, 0)``
    (or a NaN parameter)."""
    if not (a == a and v == v) or (a == 1.0 and v == 0.0):
        return x
    return a * x / math.sqrt(1.0 + v * x * x)


@kernel
def _mature_nb(state, params, close, t):  # noqa: ANN001, ANN201
    """Step 1: bar t-h's label matures at the close of bar t."""
    h = params.horizon
    ring = h + 1
    m_models = state.probs.shape[1]
    old = (t - h) % ring
    c0 = state.closes[old]
    if not (c0 > 0 and close > 0):
        return
    r = math.log(close / c0) if params.log_returns else close / c0 - 1.0
    lk = state.rets.shape[0]
    rp = state.counters[2]
    if state.counters[1] >= lk:
        state.sums[0] -= state.rets[rp]
    state.rets[rp] = abs(r)
    state.sums[0] += abs(r)
    state.counters[2] = (rp + 1) % lk
    state.counters[1] += 1
    flat = abs(r) <= params.tau
    if flat and params.drop_flat:
        return
    y_up = r > params.tau if not flat else r > 0
    base = state.bases[old]
    if not (base > 0.0 and base < 1.0):
        return
    lb = math.log(base) if y_up else math.log(1.0 - base)
    for m in range(m_models):
        po = state.probs[old, m]
        if po == po:
            _decay_add_nb(state.skill[m], params.decay, _log_score_nb(po, y_up) - lb)
    zb = state.pools[old]
    meta = state.metas[old]
    if zb == zb and meta == meta:
        d = _log_score_nb(_sigmoid_nb(zb + meta), y_up) - _log_score_nb(_sigmoid_nb(zb), y_up)
        _decay_add_nb(state.meta_skill, params.decay, d)


@kernel
def _log_score_nb(p: float, y_up: bool) -> float:
    """log P(outcome) of the forecast P(up) = ``p``, clipped to [eps, 1 - eps]."""
    pc = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(pc) if y_up else math.log(1.0 - pc)


@kernel
def _decay_add_nb(sk: np.ndarray, decay: float, d: float) -> None:
    """``sk <- decay * sk + (1, d, d^2)``: a decayed count, sum and sum of squares."""
    sk[0] = decay * sk[0] + 1.0
    sk[1] = decay * sk[1] + d
    sk[2] = decay * sk[2] + d * d


@kernel
def fuse_step_nb(state, params, close, probs, fixed_w, aux, w_out):  # noqa: ANN001, ANN201
    """One closed bar. Returns (p, agreement, disagreement, entropy, uncertainty, b, ev,
    edge_bps, base_weight, pool_p, pool_x, direction, reason); writes each member's weight into ``w_out``."""
    h = params.horizon
    ring = h + 1
    m_models = probs.shape[0]
    t = state.counters[0]
    pos = t % ring
    state.closes[pos] = close
    if t >= h:
        _mature_nb(state, params, close, t)
    base = aux[AUX_BASE]
    for m in range(m_models):
        state.probs[pos, m] = probs[m]
    state.bases[pos] = base
    state.counters[0] = t + 1
    # 2. skill weights (always computed: they are what the run reports over time)
    n_av = 0
    w_sum = 0.0
    for m in range(m_models):
        w_out[m] = 0.0
        if probs[m] == probs[m]:
            n_av += 1
            n = state.skill[m, 0]
            if n >= params.min_skill_n:
                w = max(state.skill[m, 1] / n, 0.0)
                w_out[m] = w
                w_sum += w
    base_weight = 1.0
    if w_sum > 0:
        for m in range(m_models):
            w_out[m] /= w_sum
        base_weight = 0.0
    # 3. fusion
    ok = True  # False: a fixed/stacked pool with nothing to pool
    lb = _logit_nb(base) if base == base else 0.0
    xb = 0.0
    for m in range(m_models):
        pm = probs[m]
        if pm == pm and w_out[m] > 0:
            xb += w_out[m] * (_logit_nb(pm) - lb)
    zb = lb + pool_map_nb(xb, aux[AUX_SLOPE], aux[AUX_SAT])
    p = _sigmoid_nb(zb) if base == base else np.nan
    pool = p if p == p else 0.5
    if params.method == STACKED:
        z = aux[AUX_COEF]
        sw = 0.0
        for m in range(m_models):
            pm = probs[m]
            if pm == pm:
                z += aux[AUX_COEF + 1 + m] * _logit_nb(pm)
                sw += abs(aux[AUX_COEF + 1 + m])
        p = _sigmoid_nb(z)
        ok = sw > 0
    elif params.method == WEIGHTED:
        acc = 0.0
        sw = 0.0
        for m in range(m_models):
            pm = probs[m]
            if pm == pm:
                acc += fixed_w[m] * pm
                sw += fixed_w[m]
        p = acc / sw if sw > 0 else 0.5
        ok = sw > 0
    elif params.method == STACKED_LGBM:
        meta = aux[AUX_META]
        state.pools[pos] = zb
        state.metas[pos] = meta if p == p else np.nan
        ms = state.meta_skill
        if meta == meta and p == p and ms[0] >= params.min_skill_n and ms[1] > 0:
            p = _sigmoid_nb(zb + meta)
    if p != p:
        p = 0.5
    # 4. disagreement, agreement, entropy, uncertainty
    mean_p = 0.0
    for m in range(m_models):
        if probs[m] == probs[m]:
            mean_p += probs[m]
    mean_p = mean_p / n_av if n_av > 0 else 0.5
    var = 0.0
    agree = 0
    for m in range(m_models):
        pm = probs[m]
        if pm == pm:
            var += (pm - mean_p) * (pm - mean_p)
            if (pm > 0.5 and p > 0.5) or (pm < 0.5 and p < 0.5):
                agree += 1
    disagreement = math.sqrt(var / n_av) if n_av > 0 else 0.0
    agreement = agree / n_av if n_av > 0 else 0.0
    pc = min(max(p, 1e-12), 1.0 - 1e-12)
    entropy = -(pc * math.log2(pc) + (1.0 - pc) * math.log2(1.0 - pc))
    uncertainty = 1.0 - (1.0 - entropy) * (1.0 - 2.0 * min(disagreement, 0.5))
    # 5. payoff
    b = np.nan
    mabs = np.nan
    lk = state.rets.shape[0]
    if state.counters[1] >= lk:
        mabs = state.sums[0] / lk
        b = max(mabs - params.cost, 0.0) / (mabs + params.cost)
    # 6. side, expected value, expected net edge
    side = 1 if p > 0.5 else (-1 if p < 0.5 else 0)
    q = max(p, 1.0 - p)
    ev = q * b - (1.0 - q) if b == b else np.nan
    edge = 1e4 * ((2.0 * q - 1.0) * mabs - params.trade_cost) if mabs == mabs else np.nan
    # 7. gate
    reason = 0
    if n_av == 0 or not ok:
        reason = 1
    elif b != b:
        reason = 5
    elif uncertainty > params.max_uncertainty:
        reason = 2
    elif agreement < params.min_agreement:
        reason = 3
    elif side == 0 or not ev > params.min_edge:
        reason = 4
    elif not edge > params.min_edge_bps:
        reason = 6
    direction = side if reason == 0 else 0
    return (
        p,
        agreement,
        disagreement,
        entropy,
        uncertainty,
        b,
        ev,
        edge,
        base_weight,
        pool,
        xb,
        direction,
        reason,
    )


@kernel
def fuse_batch_nb(state, params, closes, probs, fixed_w, aux, out_f, out_i, w_out):  # noqa: ANN001, ANN201
    """Fold :func:`fuse_step_nb` over bars. ``out_f`` (n, 11): p, agreement, disagreement,
    entropy, uncertainty, b, ev, edge_bps, base_weight, pool_p, pool_x; ``out_i`` (n, 2): direction, reason;
    ``w_out`` (n, M)."""
    n = closes.shape[0]
    for t in range(n):
        p, agr, dis, ent, unc, b, ev, edge, bw, pool, xb, direction, reason = fuse_step_nb(
            state, params, closes[t], probs[t], fixed_w, aux[t], w_out[t]
        )
        out_f[t, 0] = p
        out_f[t, 1] = agr
        out_f[t, 2] = dis
        out_f[t, 3] = ent
        out_f[t, 4] = unc
        out_f[t, 5] = b
        out_f[t, 6] = ev
        out_f[t, 7] = edge
        out_f[t, 8] = bw
        out_f[t, 9] = pool
        out_f[t, 10] = xb
        out_i[t, 0] = direction
        out_i[t, 1] = reason
    return state
