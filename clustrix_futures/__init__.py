"""clustrix-futures: a ``concurrent.futures.Executor`` for local processes, SLURM and SSH hosts.

Imports are lazy, so ``python -m clustrix_futures.node.worker`` on a compute node loads only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ClusterPoolExecutor": "clustrix_futures.executor",
    "ClusterFuture": "clustrix_futures.future",
    "chunks": "clustrix_futures.mapping.chunks",
    "cluster": "clustrix_futures.decorator",
    "progress": "clustrix_futures.progressbar",
    "ClusterFuturesError": "clustrix_futures.errors",
    "ConfigError": "clustrix_futures.errors",
    "JobFailedError": "clustrix_futures.errors",
    "RemoteError": "clustrix_futures.errors",
    "ExecutorBrokenError": "clustrix_futures.errors",
    "HostKeyError": "clustrix_futures.errors",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from clustrix_futures.decorator import cluster
    from clustrix_futures.errors import (
        ClusterFuturesError,
        ConfigError,
        ExecutorBrokenError,
        HostKeyError,
        JobFailedError,
        RemoteError,
    )
    from clustrix_futures.executor import ClusterPoolExecutor
    from clustrix_futures.future import ClusterFuture
    from clustrix_futures.mapping.chunks import chunks
    from clustrix_futures.progressbar import progress


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clustrix_futures' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
