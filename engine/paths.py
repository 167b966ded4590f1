"""Where the engine keeps its data store and its results.

Resolution order: an explicit argument (``--store`` / ``--results``), then the environment
(``ENGINE_DATA`` / ``ENGINE_RESULTS``), then ``./data`` and ``./results``.
"""

from __future__ import annotations

import os
from pathlib import Path


def store_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The market-data store root (Hive-partitioned Parquet)."""
    if override:
        return Path(override)
    env = os.environ.get("ENGINE_DATA")
    return Path(env) if env else Path("data")


def results_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The results root: the run log, reports and trained models."""
    if override:
        return Path(override)
    env = os.environ.get("ENGINE_RESULTS")
    return Path(env) if env else Path("results")
