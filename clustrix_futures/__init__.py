"""clustrix-futures: a ``concurrent.futures.Executor`` for local processes, SLURM, SGE, PBS, Kubernetes and SSH hosts.

The path of one task, and the package that owns each step (docs/architecture.md says more)::

    ClusterPoolExecutor.submit / map                       executor.py, mapping/
      |  the call cloudpickled here: what cannot travel fails in submit
      v
    engine: local/pool.py (local processes)  or  engine/ (session -> startup -> submission -> monitor)
      |  tasks batched into arrays, packed into elements, split to the scheduler's array limit
      v
    schedulers/ (slurm, sge, pbs, host, kubernetes)  ->  remote/ (this machine, or one SSH connection; S3)
      |  sbatch --array ...; the batch file and job script written into the run directory
      v
    runfiles/  THE client<->node contract: run-directory layout, batch file, journal v2, outcomes
      |
      v
    node/worker.py on the compute node: runs its element's tasks, journals each outcome, renames the result
      |
      v
    engine/monitor.py: ONE status query and ONE results listing per cycle -> Future.set_result/set_exception

Imports are lazy, so ``python -m clustrix_futures.node.worker`` on a compute node loads only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ClusterPoolExecutor": "clustrix_futures.executor",
    "ClusterFuture": "clustrix_futures.future",
    "chunks": "clustrix_futures.mapping.chunks",
    "Checkpointable": "clustrix_futures.checkpoint",
    "Resume": "clustrix_futures.checkpoint",
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
    from clustrix_futures.checkpoint import Checkpointable, Resume
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
