"""The live counterpart of :func:`engine.ml.run_ensemble`: one closed bar at a time.

:meth:`LiveEnsemble.from_histories` runs the batch path over every symbol's history (training
or reusing the fold models, fitting each cutoff's calibrators and the run's pool map, folding
the fusion kernel), then :meth:`LiveEnsemble.on_bar` takes each new closed bar: it predicts
the bar as a one-row segment with the current fold's models, calibrates with the fold's
calibrators and advances the same fusion kernel state by one step (O(1) per bar). When a bar
opens at or after the next cutoff, the new fold is planned, trained (or reused) and
calibrated by the same functions the batch path uses, on the history gathered so far (the
cutoff's pool map once for the run, over every symbol's bars: :class:`PoolMaps`). So
replaying bars through ``on_bar`` gives the batch decisions, bar for bar
(tests/ml/test_live.py).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DataError
from engine.ml.fusion_nb import GATE_REASONS, aux_before_cutoff
from engine.ml.inputs import REGIME, as_sections, symbol_data
from engine.ml.labels import make_labels
from engine.ml.models.base import Segment
from engine.ml.models.external import predict_members
from engine.ml.pipeline import run_ensemble
from engine.ml.symbol_pipeline import SymbolPipeline, pooled_map
from engine.ml.walkforward import Fold, SerialExecutor, fit_task


@functools.cache
def _fitter() -> ThreadPoolExecutor:
    """The one thread that fits folds ahead (see :meth:`LiveEnsemble.fit_ahead`)."""
    return ThreadPoolExecutor(1, thread_name_prefix="fold-fit")


class LiveEnsemble:
    """The ML stage of one symbol in live mode."""

    def __init__(
        self,
        pipe: SymbolPipeline,
        raw: np.ndarray,
        cal: np.ndarray,
        fold_of: np.ndarray,
        available: list[str],
        Xall: np.ndarray,
        pool: np.ndarray | None = None,
        pool_x: np.ndarray | None = None,
        maps: PoolMaps | None = None,
    ) -> None:
        self.pipe = pipe
        # the run's pool maps, shared by every symbol's LiveEnsemble (its own alone if None)
        self.maps = maps if maps is not None else PoolMaps({pipe.sd.symbol: self})
        # guards the history lists: another symbol's roll reads them from the fitter thread
        self._lock = threading.Lock()
        self.available = available
        self._ot = [pipe.sd.open_time]
        self._close = [pipe.sd.close]
        self._X = [Xall]
        self._raw = [raw]
        self._cal = [cal]
        self._fold = [fold_of]
        # the bayesian pool of every bar, mapped (pool_p, the stacked meta-learner's offset)
        # and before its map (pool_x, the pool map's input), for the fits at a roll
        nan = np.full(fold_of.shape[0], np.nan)
        pools = [nan if pool is None else pool, nan if pool_x is None else pool_x]
        self._pooled = [np.column_stack(pools)]
        self.n = int(pipe.sd.open_time.shape[0])
        self.last_open = int(pipe.sd.open_time[-1])
        self._pool: ThreadPoolExecutor | None = None
        self._next: Future[None] | None = None  # the next fold, being fitted ahead

    @classmethod
    def from_histories(
        cls,
        config: Any,
        frames: Mapping[str, Any],
        features: Mapping[str, Any],
        *,
        run_start: int | None = None,
        results_dir: str | Path | None = None,
    ) -> dict[str, LiveEnsemble]:
        """Warm up every symbol of a run on its history (candles and features frames by
        symbol, as for the batch path): one batch run, so the symbols share each cutoff's
        pool map as a backtest of them does, and go on sharing it at their rolls."""
        res = run_ensemble(config, frames, features, run_start=run_start, results_dir=results_dir)
        maps = PoolMaps({})
        for symbol, r in res.symbols.items():
            available = [c for c in features[symbol].columns if c != "open_time"]
            Xall = (
                features[symbol].select(available).to_numpy().astype(np.float64)
                if available
                else np.empty((r.open_time.shape[0], 0))
            )
            pipe = res.pipelines[symbol]
            maps.members[symbol] = cls(
                pipe, r.raw, r.probs, r.fold, available, Xall, r.pool_p, r.pool_x, maps
            )
        return dict(maps.members)

    @classmethod
    def from_history(
        cls,
        config: Any,
        frame: Any,
        features: Any,
        *,
        symbol: str,
        run_start: int | None = None,
        results_dir: str | Path | None = None,
    ) -> LiveEnsemble:
        """Warm up one symbol alone (:meth:`from_histories` of one symbol)."""
        return cls.from_histories(
            config,
            {symbol: frame},
            {symbol: features},
            run_start=run_start,
            results_dir=results_dir,
        )[symbol]

    def _remote_pool(self) -> ThreadPoolExecutor | None:
        """Workers for the remote members' requests (None with fewer than two)."""
        n = sum(m.kind == "remote" for m in self.pipe.ml.models)
        if n < 2:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="remote-model")
        return self._pool

    def _fold_for(self, open_time: int) -> int:
        s = self.pipe.sched
        first = s.run_start + s.warmup
        return -1 if open_time < first else int((open_time - first) // s.retrain_every)

    def _history(self) -> tuple[np.ndarray, ...]:
        """The bars so far, each list joined into one array (and kept so):
        ``(open_time, close, X, raw, cal, fold, pooled)``."""
        with self._lock:
            parts = (self._ot, self._close, self._X, self._raw, self._cal, self._fold, self._pooled)
            joined = tuple(np.concatenate(p) for p in parts)
            for lst, arr in zip(parts, joined, strict=True):
                lst[:] = [arr]
        return joined

    def _fold_at(self, k: int) -> Fold:
        s = self.pipe.sched
        cutoff = s.run_start + s.warmup + k * s.retrain_every
        return Fold(
            index=k,
            cutoff=cutoff,
            next_cutoff=cutoff + s.retrain_every,
            train_start=cutoff - s.train_window,
        )

    def pool_rows(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This symbol's part of fold ``k``'s pool map, from its bars so far
        (:meth:`SymbolPipeline.pool_rows`; the labels from the closes, as the batch's)."""
        ot, close, _, _, _, fold_of, pooled = self._history()
        y = make_labels(close, self.pipe.ml.labels)[1]
        return self.pipe.pool_rows(self._fold_at(k), ot, y, fold_of, pooled[:, 1])

    def _roll(self, k: int) -> None:
        """Plan, fit (or reuse) and calibrate fold k on the history gathered so far."""
        pipe = self.pipe
        s = pipe.sched
        ot, close, Xall, raw, cal, fold_of, pooled = self._history()
        pipe.sd = symbol_data(
            pipe.sd.symbol,
            pipe.sd.interval_ms,
            ot,
            close,
            Xall,
            self.available,
            pipe.feats,
            pipe.ml,
        )
        fold = self._fold_at(k)
        pipe.sched = type(s)(
            s.run_start,
            s.interval_ms,
            s.horizon,
            s.train_window,
            s.retrain_every,
            s.embargo,
            s.warmup,
            (*s.folds, fold),
        )
        plans = pipe.plan([fold])
        SerialExecutor().map(fit_task, [p.task for p in plans if p.task is not None])
        pipe.calibrate(fold, raw, cal, fold_of, pool=pooled[:, 0])
        pipe.pool_maps[k] = self.maps.at(k)

    @property
    def last_fold(self) -> int:
        """The fold of the last bar decided (-1: none, or before the first cutoff)."""
        return int(self._fold[-1][-1]) if self.n else -1

    def fit_ahead(self) -> None:
        """Fit the fold of the next bar in the background, starting now, if it opens one
        (called by :meth:`on_bar`, and once every symbol's :meth:`from_history` is done).

        A fold trains on rows whose labels are known at its cutoff, which is the open of
        the next bar: at this close every input of fold ``k`` is in, and :meth:`_roll` run
        now gives what it would give at the next bar (the same history), so a live bar at a
        retrain waits only for what is left of the fit, not for all of it (with 5m bars the
        fit has five minutes). The next :meth:`on_bar` (or :meth:`settle`) waits for it.
        One worker thread fits for every symbol, one fold at a time. Model code run here
        must not change the process's warning filters (``warnings.catch_warnings`` is not
        thread-safe: a numba compile in the live thread enters and leaves it too, and can
        restore the filters mid-fit); :func:`engine.ml.models.mlp.train_net` avoids the
        warning it would have silenced instead."""
        k = self._fold_for(self.last_open + self.pipe.sd.interval_ms)
        if k < 0 or any(f.index == k for f in self.pipe.sched.folds):
            return
        self._next = _fitter().submit(self._roll, k)

    def settle(self) -> None:
        """Wait for a fold being fitted ahead (its error, if any, is raised here)."""
        if self._next is not None:
            fut, self._next = self._next, None
            fut.result()

    def on_bar(self, open_time: int, close: float, features: Mapping[str, float]) -> dict[str, Any]:
        """Decide on one closed bar (its open time, close and feature values by name)."""
        pipe = self.pipe
        step = pipe.sd.interval_ms
        if open_time != self.last_open + step:
            raise DataError(
                f"{pipe.sd.symbol}: live bar {open_time} does not follow {self.last_open} by one interval",
                hint="backfill the missing bars (REST klines) before feeding the next closed bar",
            )
        self.settle()
        k = self._fold_for(open_time)
        if k >= 0 and not any(f.index == k for f in pipe.sched.folds):
            self._roll(k)
        x = np.array([[float(features.get(n, np.nan)) for n in self.available]])
        m = len(pipe.names)
        raw = np.full(m, np.nan)
        cal = np.full(m, np.nan)
        aux = aux_before_cutoff(1, m)[0]
        latency_ms = np.full(m, np.nan)  # each member's own prediction time
        if k >= 0:
            fold = next(f for f in pipe.sched.folds if f.index == k)
            col = {n: i for i, n in enumerate(self.available)}
            calls: list[tuple[int, Any, Segment]] = []
            for j, node in enumerate(pipe.ml.models):
                model = pipe._model(node, fold)
                if model is None:
                    continue
                cols = [col[c] for c in pipe.feats[node.name]]
                seg = Segment(np.array([open_time], dtype=np.int64), np.array([close]), x[:, cols])
                calls.append((j, model, seg))
            # remote members' requests in flight together: the bar waits for the slowest
            done = predict_members([(m, sg) for _, m, sg in calls], self._remote_pool())
            for (j, _, _), (p, took_ms) in zip(calls, done, strict=True):
                raw[j], latency_ms[j] = p[0], took_ms
                cal[j] = pipe.calibrators[(k, pipe.names[j])](raw[j : j + 1])[0]
            regime = x[:, [col[c] for c in pipe.feats[REGIME]]]
            aux = pipe.aux(k, cal[None, :], regime)[0]
        assert pipe.runner is not None  # set by the batch run of from_history
        out = pipe.runner.step(close, cal, aux)
        with self._lock:
            self._ot.append(np.array([open_time], dtype=np.int64))
            self._close.append(np.array([close]))
            self._X.append(x)
            self._raw.append(raw[None, :])
            self._cal.append(cal[None, :])
            self._fold.append(np.array([k], dtype=np.int32))
            self._pooled.append(np.array([[out["pool_p"], out["pool_x"]]]))
        self.last_open = open_time
        self.n += 1
        self.fit_ahead()
        out.update(
            open_time=open_time,
            raw=raw,
            probs=cal,
            fold=k,
            gate_reason=GATE_REASONS[out["gate_code"]],
            latency_ms=[float(v) for v in latency_ms],  # per member, in model order
            model_versions={
                n.name: (
                    pipe.version(n, next(f for f in pipe.sched.folds if f.index == k))
                    if k >= 0
                    else None
                )
                for n in pipe.ml.models
            },
        )
        return out


class PoolMaps:
    """Each cutoff's pool map, shared by the LiveEnsembles of a run (``members``, in the
    run's symbol order): fitted once, at the first roll that asks, over every member that has
    calibrated the folds before it (:func:`engine.ml.symbol_pipeline.pooled_map`, as the
    batch run fits it). Only bars whose labels are known at the cutoff enter, so a member
    that has not yet seen the last bars before it gives the same rows."""

    def __init__(self, members: dict[str, LiveEnsemble]) -> None:
        self.members = members
        self._fitted: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def at(self, k: int) -> tuple[float, float]:
        with self._lock:
            if k not in self._fitted:
                ready = [
                    e for e in self.members.values() if all(f in e.pipe.bases for f in range(k))
                ]
                parts = [e.pool_rows(k) for e in ready]
                self._fitted[k] = pooled_map(k, [e.pipe for e in ready], parts)
            return self._fitted[k]


__all__ = ["LiveEnsemble", "PoolMaps", "as_sections"]
