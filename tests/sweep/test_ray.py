"""``--executor ray``: a sweep on a local Ray cluster (started here, 2 CPUs) equals a local run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.runlog import RunLog
from engine.sweep import RayExecutor, run_sweep

from .helpers import EMA

ray = pytest.importorskip("ray")

SPAN = {"start": "2024-03-01", "end": "2024-03-04", "symbols": ["BTCUSDT"]}
GRID = ["fast=5,9,12", "slow=26,50"]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    ray.init(
        num_cpus=2,
        object_store_memory=80 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.parametrize("fused", [True, False])
def test_ray_run_equals_local_run(
    ray_cluster: None, usdm_store: Path, tmp_path: Path, fused: bool
) -> None:
    local = run_sweep(EMA, GRID, store=usdm_store, executor="local", log=False, fused=fused, **SPAN)
    on_ray = run_sweep(
        EMA, GRID, store=usdm_store, results=tmp_path, executor=RayExecutor(chunk_size=2),
        fused=fused, **SPAN,
    )  # fmt: skip
    assert [r.params for r in on_ray.results] == [r.params for r in local.results]
    assert [r.metrics for r in on_ray.results] == [r.metrics for r in local.results]
    # every result streamed into the log: one child per combination, in index order
    with RunLog(tmp_path) as log:
        for r in on_ray.results:
            child = log.get_run(r.run_id)  # type: ignore[arg-type]
            assert child is not None and child["parent_run_id"] == on_ray.run_id
        parent = log.get_run(on_ray.run_id)  # type: ignore[arg-type]
    assert parent is not None and "RayExecutor" in str(parent["params"])


def test_training_executor_ray_fits_the_same_folds(
    ray_cluster: None, usdm_dir: Path, tmp_path: Path
) -> None:
    """``training.executor: ray``: the fold fits run as Ray tasks; same versions, same predictions."""
    import numpy as np
    import polars as pl

    from engine.features import compute
    from engine.ml.pipeline import run_ensemble
    from tests.ml.conftest import FEATURES, small_config

    candles = pl.read_csv(usdm_dir / "klines" / "BTCUSDT-5m.csv.gz", n_rows=2600).with_columns(
        pl.col("open_time").cast(pl.Int64),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
    )
    feats = compute(candles, FEATURES, interval="5m")
    models = [{"kind": "lightgbm", "params": {"n_estimators": 10, "num_leaves": 7}}]
    out = {}
    for executor in ("local", "ray"):
        cfg = small_config(models=models, training={"executor": executor})
        out[executor] = run_ensemble(
            cfg, {"BTCUSDT": candles}, {"BTCUSDT": feats}, results_dir=tmp_path / executor
        )
    local, on_ray = out["local"].symbols["BTCUSDT"], out["ray"].symbols["BTCUSDT"]
    assert out["ray"].n_fitted == out["local"].n_fitted >= 2
    assert on_ray.versions == local.versions
    np.testing.assert_array_equal(on_ray.raw, local.raw)
    np.testing.assert_array_equal(on_ray.direction, local.direction)
