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
