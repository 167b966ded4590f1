"""The per-bar ensemble step kernel: reliability update, fusion, uncertainty, payoff, gate.

Imports only numpy and engine.kernels. ``fuse_step_nb(state, params, close, probs, fixed_w, coef,
w_out)`` advances one closed bar; ``fuse_batch_nb`` folds it over a whole segment (the batch
path is that fold, nothing else). Live mode calls the step once per closed bar: O(1) per bar.

Per bar t, with calibrated model probabilities ``p_m`` (NaN = abstain):

1. Maturing label: bar ``t-h``'s label is known at the close of bar t:
   ``r = log(close_t / close_{t-h})`` (or simple). Its ``|r|`` enters the payoff ring
   (last ``L`` matured bars). Unless it is flat (``|r| <= tau`` with flat dropped) each model
   that voted at ``t-h`` gets a hit or a miss: its Beta posterior
   ``(a, b) <- prior + decay * ((a, b) - prior) + (hit, miss)``.
2. Fusion over the models with a finite p:

   - bayesian (0): ``logit p = sum w_m logit p_m / sum w_m`` with ``w_m = P(hit rate > 1/2)``
     under the model's Beta posterior (normal approximation ``Phi((mean - 1/2) / sd)``);
   - weighted (1): linear pool ``p = sum w_m p_m / sum w_m`` with fixed weights;
   - stacked (2): ``p = sigmoid(c_0 + sum c_m logit p_m)`` with the meta-learner's
     coefficients (an abstaining model enters as ``p = 1/2``).
3. ``disagreement`` = population std of the p_m; ``agreement`` = share of the models whose
   side (p_m > 1/2) is the fused side; ``entropy`` = binary entropy of p in bits;
   ``uncertainty = 1 - (1 - entropy) * (1 - 2 * disagreement)`` (in [0, 1]).
4. Payoff ratio ``b = max(m - c, 0) / (m + c)``, ``m`` the mean ``|r|`` of the last ``L``
   matured bars and ``c`` the round-trip cost: a directional bet held h bars wins ``|r| - c``
   when right and loses ``|r| + c`` when wrong. ``b`` is NaN until ``L`` labels matured.
5. Side = sign(p - 1/2), ``q = max(p, 1 - p)`` its probability; ``ev = q * b - (1 - q)``.
6. Gate (first that applies): 1 no_models (none available / all weights 0), 5 no_payoff
   (b unknown), 2 uncertainty > max, 3 agreement < min, 4 ev <= min_edge. Direction is the
   side when the gate passes (reason 0), else 0 (flat).

Oracle: a plain-Python loop over the same formulas (tests/ml/test_fusion.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from engine.kernels import kernel

BAYESIAN, WEIGHTED, STACKED = 0, 1, 2
GATE_REASONS = ("", "no_models", "uncertainty", "agreement", "edge", "no_payoff")
_EPS = 1e-6


class FusionState(NamedTuple):
    closes: np.ndarray  # (h+1,) ring of closes
    probs: np.ndarray  # (h+1, M) ring of calibrated probabilities
    alpha: np.ndarray  # (M,) Beta posterior: hits
    beta: np.ndarray  # (M,) Beta posterior: misses
    rets: np.ndarray  # (L,) ring of matured |r|
    counters: np.ndarray  # int64 [bars seen, matured returns, ring position]
    sums: np.ndarray  # float64 [sum of |r| in the ring]


class FusionParams(NamedTuple):
    method: int
    horizon: int
    tau: float
    cost: float
    drop_flat: bool
    log_returns: bool
    prior_a: float
    prior_b: float
    decay: float
    max_uncertainty: float
    min_agreement: float
    min_edge: float


def new_state(
    n_models: int, *, horizon: int, lookback: int, prior: tuple[float, float]
) -> FusionState:
    """A fresh state (before the run's first bar)."""
    return FusionState(
        closes=np.full(horizon + 1, np.nan),
        probs=np.full((horizon + 1, n_models), np.nan),
        alpha=np.full(n_models, float(prior[0])),
        beta=np.full(n_models, float(prior[1])),
        rets=np.zeros(lookback),
        counters=np.zeros(3, dtype=np.int64),
        sums=np.zeros(1),
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
def fuse_step_nb(state, params, close, probs, fixed_w, coef, w_out):  # noqa: ANN001, ANN201
    """One closed bar. Returns (p, agreement, disagreement, entropy, uncertainty, b, ev,
    direction, reason); writes each model's normalized weight into ``w_out``."""
    h = params.horizon
    ring = h + 1
    m_models = probs.shape[0]
    t = state.counters[0]
    pos = t % ring
    state.closes[pos] = close
    # 1. the label of bar t-h matures now
    if t >= h:
        old = (t - h) % ring
        c0 = state.closes[old]
        if c0 > 0 and close > 0:
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
            if not (flat and params.drop_flat):
                y_up = r > params.tau if not flat else r > 0
                for m in range(m_models):
                    po = state.probs[old, m]
                    if po == po and po != 0.5:
                        hit = 1.0 if (po > 0.5) == y_up else 0.0
                        state.alpha[m] = (
                            params.prior_a + params.decay * (state.alpha[m] - params.prior_a) + hit
                        )
                        state.beta[m] = (
                            params.prior_b
                            + params.decay * (state.beta[m] - params.prior_b)
                            + 1.0
                            - hit
                        )
    for m in range(m_models):
        state.probs[pos, m] = probs[m]
    state.counters[0] = t + 1
    # 2. fusion
    n_av = 0
    sw = 0.0
    acc = 0.0
    for m in range(m_models):
        w_out[m] = 0.0
    if params.method == STACKED:
        z = coef[0]
        for m in range(m_models):
            pm = probs[m]
            if pm == pm:
                n_av += 1
                z += coef[m + 1] * _logit_nb(pm)
                w_out[m] = abs(coef[m + 1])
                sw += abs(coef[m + 1])
        p = _sigmoid_nb(z) if n_av > 0 else 0.5
    else:
        for m in range(m_models):
            pm = probs[m]
            if pm == pm:
                n_av += 1
                if params.method == BAYESIAN:
                    a = state.alpha[m]
                    bb = state.beta[m]
                    mean = a / (a + bb)
                    sd = math.sqrt(a * bb / ((a + bb) * (a + bb) * (a + bb + 1.0)))
                    w = 0.5 * (1.0 + math.erf((mean - 0.5) / (sd * math.sqrt(2.0))))
                    acc += w * _logit_nb(pm)
                else:
                    w = fixed_w[m]
                    acc += w * pm
                w_out[m] = w
                sw += w
        if sw > 0:
            p = _sigmoid_nb(acc / sw) if params.method == BAYESIAN else acc / sw
        else:
            p = 0.5
    if sw > 0:
        for m in range(m_models):
            w_out[m] /= sw
    # 3. disagreement, agreement, entropy, uncertainty
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
    # 4. payoff ratio
    b = np.nan
    lk = state.rets.shape[0]
    if state.counters[1] >= lk:
        mabs = state.sums[0] / lk
        b = max(mabs - params.cost, 0.0) / (mabs + params.cost)
    # 5. side and expected value
    side = 1 if p > 0.5 else (-1 if p < 0.5 else 0)
    q = max(p, 1.0 - p)
    ev = q * b - (1.0 - q) if b == b else np.nan
    # 6. gate
    reason = 0
    if n_av == 0 or sw <= 0:
        reason = 1
    elif b != b:
        reason = 5
    elif uncertainty > params.max_uncertainty:
        reason = 2
    elif agreement < params.min_agreement:
        reason = 3
    elif side == 0 or not ev > params.min_edge:
        reason = 4
    direction = side if reason == 0 else 0
    return p, agreement, disagreement, entropy, uncertainty, b, ev, direction, reason


@kernel
def fuse_batch_nb(state, params, closes, probs, fixed_w, coefs, out_f, out_i, w_out):  # noqa: ANN001, ANN201
    """Fold :func:`fuse_step_nb` over bars. ``out_f`` (n, 7): p, agreement, disagreement,
    entropy, uncertainty, b, ev; ``out_i`` (n, 2): direction, reason; ``w_out`` (n, M)."""
    n = closes.shape[0]
    for t in range(n):
        p, agr, dis, ent, unc, b, ev, direction, reason = fuse_step_nb(
            state, params, closes[t], probs[t], fixed_w, coefs[t], w_out[t]
        )
        out_f[t, 0] = p
        out_f[t, 1] = agr
        out_f[t, 2] = dis
        out_f[t, 3] = ent
        out_f[t, 4] = unc
        out_f[t, 5] = b
        out_f[t, 6] = ev
        out_i[t, 0] = direction
        out_i[t, 1] = reason
    return state
