"""LightGBM and XGBoost tree ensembles evaluated by a branch-free numba kernel.

:func:`parse_lightgbm` reads a LightGBM text model (thresholds and leaf values are written
with full double precision) and :func:`parse_xgboost` an XGBoost JSON model into flat arrays
where every leaf is a node that loops to itself, so a tree is walked for a fixed number of
levels (its depth) with no data-dependent branch:
``node = kids[node, x[feature[node]] > threshold[node]]`` (:func:`walk_block_nb`). Rows are
processed in blocks of 32 per tree, which keeps the tree in cache and lets the CPU overlap
the rows' walks; this is about twice as fast as ``lightgbm.Booster.predict``, and one row
(live mode) costs microseconds where ``xgboost.Booster.inplace_predict`` costs about 1 ms.

LightGBM's semantics, for a dense float64 row of finite values: a value with
``|v| <= kZeroThreshold`` (``1e-35f``) is read as 0.0 (LightGBM keeps only the non-zero
entries of a dense row), a row goes left when ``v <= threshold``, the raw score is the sum of
the leaf values in tree order (float64), and P(up) = ``1 / (1 + exp(-sigmoid * raw))`` with
libm's ``exp`` (as ``std::exp``). Oracle: ``lightgbm.Booster.predict`` (bit-identical).

XGBoost's (``binary:logistic``, ``gbtree``): the row is cast to float32, a row goes left when
``v < split_condition`` (stored here as "right when ``v > `` the float32 just below it", the
same test for float32 values), the margin starts at the base score's logit and adds the leaf
values in tree order in float32, and P(up) = ``1 / (expf(min(-margin, 88.7)) + 1 + 1e-16)``
in float32 (XGBoost's ``common::Sigmoid``). Oracle: ``xgboost.Booster.inplace_predict``
(bit-identical); :func:`parse_xgboost` also checks itself against it on probe rows, so an
XGBoost release that changes these rules falls back to the library instead of drifting.

Tested in ``tests/ml/test_trees.py``. A model the kernel cannot evaluate exactly (LightGBM:
categorical splits, zero-as-missing splits, linear trees, more than one tree per iteration,
another objective than ``binary``; XGBoost: another objective or booster, categorical splits,
several targets or parallel trees) parses to None and the caller keeps the library's predict;
rows with a non-finite value never reach it (they abstain, see
:func:`engine.ml.models.base.masked_predict`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from engine.kernels import kernel

#: LightGBM's kZeroThreshold (the float literal 1e-35f)
ZERO_THRESHOLD = float(np.float32(1e-35))
#: rows walked together through one tree
BLOCK = 32


class Trees(NamedTuple):
    """A binary tree ensemble as flat arrays (leaves are self-looping nodes).

    ``feature``/``threshold``/``kids`` per node (internal nodes first, then one per leaf
    with threshold +inf so both kids are itself), ``value`` per node (the leaf value; 0 for
    internal nodes), ``roots``/``depth`` per tree, ``sigmoid`` the objective's scale.
    """

    feature: np.ndarray
    threshold: np.ndarray
    kids: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: np.ndarray
    sigmoid: float
    n_features: int
    xgboost: bool = False
    base: float = 0.0


def _numbers(lines: list[str], dtype: type) -> np.ndarray:
    """All space-separated numbers of ``lines`` in order, in one conversion."""
    return np.array(" ".join(lines).split(), dtype=dtype)


def parse_lightgbm(text: str) -> Trees | None:
    """Parse LightGBM model text; None when the kernel cannot reproduce the model exactly."""
    head, _, body = text.partition("\nTree=")
    kv = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    obj = kv.get("objective", "").split()
    if (
        not body
        or not obj
        or obj[0] != "binary"
        or kv.get("num_tree_per_iteration", "1") != "1"
        or "average_output" in head.splitlines()
    ):
        return None
    sigmoid = 1.0
    for tok in obj[1:]:
        if tok.startswith("sigmoid:"):
            sigmoid = float(tok.split(":", 1)[1])
    body = "Tree=" + body.split("\nend of trees", 1)[0]
    fields: dict[str, list[str]] = {}
    for line in body.splitlines():  # one pass: every tree's lines, grouped by key, in order
        key, eq, val = line.partition("=")
        if eq:
            fields.setdefault(key, []).append(val)

    def field(name: str) -> list[str]:
        return fields.get(name, [])

    if any(int(v) for v in field("num_cat")) or any(v != "0" for v in field("is_linear")):
        return None
    n_leaves = np.array(field("num_leaves"), dtype=np.int64)
    leaf_value = _numbers(field("leaf_value"), np.float64)
    if n_leaves.shape[0] == 0 or leaf_value.shape[0] != int(n_leaves.sum()):
        return None
    split = n_leaves > 1  # trees with splits (a single-leaf tree has no split lines)
    n_int = np.where(split, n_leaves - 1, 0)
    dt = _numbers(field("decision_type"), np.int64)
    if dt.shape[0] != int(n_int.sum()):
        return None
    if np.any(dt & 1) or np.any(((dt >> 2) & 3) == 1):  # categorical / zero as missing
        return None
    f = _numbers(field("split_feature"), np.int64)
    th = _numbers(field("threshold"), np.float64)
    lc = _numbers(field("left_child"), np.int64)
    rc = _numbers(field("right_child"), np.int64)
    n_nodes = int(n_int.sum())
    total = n_nodes + leaf_value.shape[0]
    # global ids: internal nodes of tree t at node_base[t] + i, its leaves at leaf_base[t] + l
    node_base = np.concatenate([[0], np.cumsum(n_int)[:-1]]).astype(np.int64)
    leaf_base = n_nodes + np.concatenate([[0], np.cumsum(n_leaves)[:-1]]).astype(np.int64)
    owner = np.repeat(np.arange(n_leaves.shape[0]), n_int)
    nb_, lb_ = node_base[owner], leaf_base[owner]
    feature = np.zeros(total, dtype=np.int64)
    threshold = np.full(total, np.inf)
    kids = np.empty((total, 2), dtype=np.int64)
    value = np.zeros(total)
    feature[:n_nodes] = f
    threshold[:n_nodes] = th
    kids[:n_nodes, 0] = np.where(lc >= 0, lc + nb_, lb_ + (-lc - 1))
    kids[:n_nodes, 1] = np.where(rc >= 0, rc + nb_, lb_ + (-rc - 1))
    leaf_ids = np.arange(n_nodes, total)
    kids[n_nodes:, 0] = leaf_ids
    kids[n_nodes:, 1] = leaf_ids
    value[n_nodes:] = leaf_value
    roots = np.where(split, node_base, leaf_base).astype(np.int64)
    depth = np.zeros(n_leaves.shape[0], dtype=np.int64)
    tree_depths_nb(kids, roots, n_nodes, depth)
    n_features = int(kv.get("max_feature_idx", "-1")) + 1
    if n_nodes and int(f.max()) >= n_features:
        return None
    return Trees(
        feature=feature,
        threshold=threshold,
        kids=np.ascontiguousarray(kids),
        value=value,
        roots=roots,
        depth=depth,
        sigmoid=sigmoid,
        n_features=n_features,
    )


@kernel(allocates=True)
def tree_depths_nb(kids: np.ndarray, roots: np.ndarray, first_leaf: int, out: np.ndarray) -> None:
    """Levels from each root to its deepest leaf (ids >= ``first_leaf`` are leaves).

    Oracle: a recursive walk of the tree (``Booster.dump_model`` structure).
    """
    stack = np.empty((kids.shape[0] + 1, 2), dtype=np.int64)
    for t in range(roots.shape[0]):
        best = 0
        k = 0
        stack[0, 0] = roots[t]
        stack[0, 1] = 0
        k = 1
        while k > 0:
            k -= 1
            node = stack[k, 0]
            d = stack[k, 1]
            if node >= first_leaf:
                if d > best:
                    best = d
                continue
            stack[k, 0] = kids[node, 0]
            stack[k, 1] = d + 1
            stack[k + 1, 0] = kids[node, 1]
            stack[k + 1, 1] = d + 1
            k += 2
        out[t] = best


#: rows per thread below which one thread predicts everything
MIN_ROWS_PER_THREAD = 4_096
#: rows of random probes :func:`parse_xgboost` checks against the library
PROBE_ROWS = 256


def parse_xgboost(booster: Any) -> Trees | None:
    """An ``xgboost.Booster`` as :class:`Trees` (its JSON model); None when the kernel does
    not cover the model or does not reproduce ``inplace_predict`` on probe rows (random
    rows, and rows on and just above every split condition)."""
    import orjson

    j = orjson.loads(booster.save_raw("json"))
    learner = j["learner"]
    gb = learner["gradient_booster"]
    mp = learner["learner_model_param"]
    if (
        learner["objective"]["name"] != "binary:logistic"
        or gb["name"] != "gbtree"
        or int(mp.get("num_target", "1")) != 1
        or int(gb["model"]["gbtree_model_param"].get("num_parallel_tree", "1")) != 1
    ):
        return None
    trees = gb["model"]["trees"]
    if any(int(v) for t in trees for v in t["split_type"]):  # categorical splits
        return None
    base = prob_to_margin_nb(np.float32(np.atleast_1d(orjson.loads(mp["base_score"]))[0]))
    sizes = np.array([len(t["left_children"]) for t in trees], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    node_off = np.repeat(off, sizes)  # each node's tree offset

    def flat(key: str, dtype: Any) -> np.ndarray:
        return np.array([v for t in trees for v in t[key]], dtype=dtype)

    lc, rc = flat("left_children", np.int64), flat("right_children", np.int64)
    cond = flat("split_conditions", np.float32)
    parent = flat("parents", np.int64)
    leaf = lc == -1
    me = np.arange(lc.shape[0], dtype=np.int64)
    kids = np.stack([np.where(leaf, me, lc + node_off), np.where(leaf, me, rc + node_off)], axis=1)
    # each node's level: a root's is 0, a child's its parent's + 1 (as many passes as levels)
    is_root = me == node_off
    up = np.where(is_root, me, parent + node_off)
    level = np.zeros(lc.shape[0], dtype=np.int64)
    for _ in range(lc.shape[0]):
        nxt = np.where(is_root, 0, level[up] + 1)
        if np.array_equal(nxt, level):
            break
        level = nxt
    n_features = int(booster.num_features())
    out = Trees(
        feature=np.where(leaf, 0, flat("split_indices", np.int64)),
        # left when v < cond == right when v > the float32 below cond (v a float32)
        threshold=np.where(leaf, np.float32(np.inf),
                           np.nextafter(cond, np.float32(-np.inf))).astype(np.float32),
        kids=np.ascontiguousarray(kids),
        value=np.where(leaf, cond, np.float32(0.0)).astype(np.float32),
        roots=off,
        depth=np.maximum.reduceat(level, off) if lc.shape[0] else np.zeros(0, dtype=np.int64),
        sigmoid=1.0,
        n_features=n_features,
        xgboost=True,
        base=float(base),
    )
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(PROBE_ROWS, n_features)) * rng.choice([1e-3, 1.0, 100.0], n_features)
    conds = out.threshold[np.isfinite(out.threshold)]
    if conds.shape[0]:
        at = np.nextafter(conds, np.float32(np.inf))[rng.integers(0, conds.shape[0], probe.shape)]
        probe = np.concatenate([probe, at, np.nextafter(at, np.float32(np.inf))]).astype(np.float64)
    if not np.array_equal(predict_trees(out, probe), booster.inplace_predict(probe)):
        return None
    return out


def predict_trees(trees: Trees, X: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """P(up) of each (finite) row of ``X`` as the library's predict gives it (float64).

    ``threads`` > 1 splits the rows into that many contiguous chunks, each run by the
    kernel (which releases the GIL) in its own thread; rows are independent, so the result
    does not depend on ``threads``.
    """
    if X.shape[1] != trees.n_features:
        raise ValueError(f"expected {trees.n_features} features, got {X.shape[1]}")
    if trees.xgboost:
        X = np.ascontiguousarray(X, dtype=np.float32)
        out32 = np.empty(X.shape[0], dtype=np.float32)
    else:
        X = np.ascontiguousarray(X, dtype=np.float64)
        tiny = np.abs(X) <= ZERO_THRESHOLD
        if tiny.any():  # LightGBM reads these as 0.0
            X = np.where(tiny, 0.0, X)
    out = np.empty(X.shape[0])

    def run(lo: int, hi: int) -> None:
        if trees.xgboost:
            xgb_proba_nb(X[lo:hi], trees.feature, trees.threshold, trees.kids, trees.value,
                         trees.roots, trees.depth, np.float32(trees.base), out32[lo:hi])
        else:
            lgb_proba_nb(X[lo:hi], trees.feature, trees.threshold, trees.kids, trees.value,
                         trees.roots, trees.depth, trees.sigmoid, out[lo:hi])

    k = max(1, min(threads, X.shape[0] // MIN_ROWS_PER_THREAD))
    if k == 1:
        run(0, X.shape[0])
    else:
        from concurrent.futures import ThreadPoolExecutor

        edges = np.linspace(0, X.shape[0], k + 1).astype(np.int64)
        with ThreadPoolExecutor(max_workers=k) as pool:
            for f in [pool.submit(run, int(a), int(b))
                      for a, b in zip(edges[:-1], edges[1:], strict=True)]:
                f.result()
    if trees.xgboost:
        out[:] = out32
    return out


@kernel
def prob_to_margin_nb(p: np.float32) -> np.float32:
    """XGBoost's base margin of a ``binary:logistic`` base score ``p``: ``-logf(1/p - 1)``
    in float32 with libm's ``logf`` (numpy's float32 log differs from it in the last bit)."""
    one = np.float32(1.0)
    return -np.float32(math.log(one / p - one))


@kernel(inline=True)
def walk_block_nb(X: np.ndarray, b0: int, w: int, root: int, depth: int, feature: np.ndarray,
                  threshold: np.ndarray, kids: np.ndarray, nodes: np.ndarray) -> None:
    """``nodes[r]`` = the leaf that row ``b0 + r`` (r < w) of ``X`` reaches in the tree at
    ``root`` (``depth`` levels; right when ``x > threshold``)."""
    for r in range(w):
        nodes[r] = root
    for _ in range(depth):
        for r in range(w):
            nd = nodes[r]
            nodes[r] = kids[nd, np.int64(X[b0 + r, feature[nd]] > threshold[nd])]


@kernel(allocates=True)
def lgb_proba_nb(
    X: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    kids: np.ndarray,
    value: np.ndarray,
    roots: np.ndarray,
    depth: np.ndarray,
    sigmoid: float,
    out: np.ndarray,
) -> None:
    """``out[i] = 1 / (1 + exp(-sigmoid * sum_t leaf_t(X[i])))``, trees summed in order.

    Oracle: ``lightgbm.Booster.predict`` on finite rows (bit-identical).
    """
    n = X.shape[0]
    acc = np.zeros(BLOCK)
    nodes = np.zeros(BLOCK, dtype=np.int64)
    for b0 in range(0, n, BLOCK):
        w = min(BLOCK, n - b0)
        for r in range(w):
            acc[r] = 0.0
        for t in range(roots.shape[0]):
            walk_block_nb(X, b0, w, roots[t], depth[t], feature, threshold, kids, nodes)
            for r in range(w):
                acc[r] += value[nodes[r]]
        for r in range(w):
            out[b0 + r] = 1.0 / (1.0 + math.exp(-sigmoid * acc[r]))


@kernel(allocates=True)
def xgb_proba_nb(
    X: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    kids: np.ndarray,
    value: np.ndarray,
    roots: np.ndarray,
    depth: np.ndarray,
    base: np.float32,
    out: np.ndarray,
) -> None:
    """XGBoost's ``binary:logistic`` in float32 (``X``, ``threshold``, ``value``, ``out``):
    the margin ``base + leaf_1 + leaf_2 + ...`` in tree order, then ``common::Sigmoid``.

    Oracle: ``xgboost.Booster.inplace_predict`` on finite rows (bit-identical).
    """
    n = X.shape[0]
    acc = np.zeros(BLOCK, dtype=np.float32)
    nodes = np.zeros(BLOCK, dtype=np.int64)
    one = np.float32(1.0)
    for b0 in range(0, n, BLOCK):
        w = min(BLOCK, n - b0)
        for r in range(w):
            acc[r] = base
        for t in range(roots.shape[0]):
            walk_block_nb(X, b0, w, roots[t], depth[t], feature, threshold, kids, nodes)
            for r in range(w):
                acc[r] = acc[r] + value[nodes[r]]
        for r in range(w):
            m = min(-acc[r], np.float32(88.7))
            out[b0 + r] = one / (np.float32(math.exp(m)) + one + np.float32(1e-16))
