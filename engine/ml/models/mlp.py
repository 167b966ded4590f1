"""A small neural net: scikit-learn's MLPClassifier behind a StandardScaler.

Trained by :func:`train_net` (Adam, one seeded ``RandomState``, early stopping off), BLAS
limited to the configured thread count. Saved as ``weights.npz`` (scaler mean/scale, each
layer's coefs and intercepts) plus ``architecture.json``; prediction is the same forward
pass (a numba dense layer with a fixed summation order, ReLU hidden layers, logistic
output) for a fresh fit and a loaded model, and for one row or many.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import RunError
from engine.kernels import kernel
from engine.ml.models.base import Segment, TrainSet, masked_predict, read_json, write_json


@kernel(allocates=True)
def dense_nb(a: np.ndarray, w: np.ndarray, b: np.ndarray, relu: bool) -> np.ndarray:
    """``a @ w + b`` (then ReLU) with each output summed in a fixed order,
    ``((b[j] + a[i,0] w[0,j]) + a[i,1] w[1,j]) + ...``, so a row's result does not depend on
    how many rows are computed with it (BLAS may differ by 1 ulp between a 1-row and an
    n-row product). The loop over outputs is innermost (a row of ``w`` is contiguous), so the
    outputs' sums advance together; each keeps its own order. Oracle:
    ``numpy.maximum(a @ w + b, 0)``."""
    n, k = a.shape
    m = w.shape[1]
    out = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            out[i, j] = b[j]
        for t in range(k):
            x = a[i, t]
            for j in range(m):
                out[i, j] += x * w[t, j]
        if relu:
            for j in range(m):
                if not out[i, j] > 0.0:
                    out[i, j] = 0.0
    return out


def train_net(train: TrainSet, params: dict[str, Any], *, seed: int) -> tuple[Any, Any]:
    """The fitted ``StandardScaler`` and ``MLPClassifier`` of ``train`` (BLAS threads are the
    caller's to limit).

    Adam over shuffled mini-batches, one :meth:`~sklearn.neural_network.MLPClassifier.partial_fit`
    an epoch, for at most ``max_iter`` epochs; it stops sooner, as ``fit`` would, once the
    training loss has not improved by ``tol`` for ``n_iter_no_change`` epochs. The epochs are
    driven here rather than by ``fit`` because ``fit`` warns (``ConvergenceWarning``) when it
    runs out of epochs, which a fixed epoch budget does by design, and silencing that with
    ``warnings.catch_warnings`` is not safe in a fitter thread: the filters are the process's,
    and a numba compile in the live thread (which enters and leaves ``catch_warnings`` too)
    can restore them mid-fit, so the warning escaped (an error under ``-W error``). One
    ``RandomState`` feeds the weights' initialisation and every epoch's shuffle, so a seed
    gives one net."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    X = np.ascontiguousarray(train.X, dtype=np.float64)
    y = train.y.astype(np.int64)
    held = np.unique(y).tolist()
    if held != [0, 1]:
        raise RunError(
            f"mlp: training labels hold only class {held}",
            hint="lengthen training.train_window or lower labels.cost_bps",
        )
    scaler = StandardScaler().fit(X)
    Xs = scaler.transform(X)
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(params["hidden_layer_sizes"]),
        activation="relu",
        solver="adam",
        alpha=params["alpha"],
        learning_rate_init=params["learning_rate_init"],
        max_iter=params["max_iter"],
        batch_size=min(params["batch_size"], X.shape[0]),
        tol=params["tol"],
        early_stopping=False,
        shuffle=True,
        random_state=np.random.RandomState(seed),
    )
    best, stale = np.inf, 0
    for _ in range(params["max_iter"]):
        clf.partial_fit(Xs, y, classes=np.array([0, 1]))
        loss = clf.loss_curve_[-1]
        stale = stale + 1 if loss > best - clf.tol else 0
        best = min(best, loss)
        if stale > clf.n_iter_no_change:
            break
    return scaler, clf


class MLPModel:
    kind = "mlp"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.coefs: list[np.ndarray] = []
        self.intercepts: list[np.ndarray] = []

    def fit(self, train: TrainSet, *, seed: int, threads: int) -> MLPModel:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            scaler, clf = train_net(train, self.params, seed=seed)
        self.mean = scaler.mean_.astype(np.float64)
        self.scale = scaler.scale_.astype(np.float64)
        self.coefs = [np.asarray(c, dtype=np.float64) for c in clf.coefs_]
        self.intercepts = [np.asarray(b, dtype=np.float64) for b in clf.intercepts_]
        return self

    def _forward(self, X: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.scale is not None
        a = (X - self.mean) / self.scale
        last = len(self.coefs) - 1
        for i, (w, b) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            a = dense_nb(np.ascontiguousarray(a), w, b, i < last)
        z = a[:, 0]
        return 1.0 / (1.0 + np.exp(-z))

    def predict_proba(self, seg: Segment) -> np.ndarray:
        return masked_predict(seg.X, self._forward)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"scaler_mean": self.mean, "scaler_scale": self.scale}  # type: ignore[dict-item]
        for i, (w, b) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            arrays[f"coef_{i}"] = w
            arrays[f"intercept_{i}"] = b
        np.savez(path / "weights.npz", **arrays)  # type: ignore[arg-type]  # numpy stub types **kwds as allow_pickle
        write_json(
            path / "architecture.json",
            {
                "layers": [int(self.coefs[0].shape[0])] + [int(w.shape[1]) for w in self.coefs],
                "hidden_activation": "relu",
                "output_activation": "logistic",
                "scaler": "standard",
            },
        )

    @classmethod
    def load(cls, path: Path, params: dict[str, Any], *, threads: int = 1) -> MLPModel:
        arch = read_json(path / "architecture.json")
        m = cls(params)
        with np.load(path / "weights.npz") as z:
            m.mean = z["scaler_mean"]
            m.scale = z["scaler_scale"]
            n = len(arch["layers"]) - 1
            m.coefs = [z[f"coef_{i}"] for i in range(n)]
            m.intercepts = [z[f"intercept_{i}"] for i in range(n)]
        return m
