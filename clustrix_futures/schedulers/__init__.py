"""Scheduler backends: one small module each, behind :class:`~clustrix_futures.schedulers.base.Backend`."""

from __future__ import annotations

from clustrix_futures.schedulers.base import Backend, BackendContext


def get_backend(name: str, context: BackendContext) -> Backend:
    if name == "slurm":
        from clustrix_futures.schedulers.slurm import SlurmBackend

        return SlurmBackend()
    if name == "ssh":
        from clustrix_futures.schedulers.host import HostBackend

        return HostBackend(context)
    if name == "sge":
        from clustrix_futures.schedulers.sge import SgeBackend

        return SgeBackend(context)
    if name == "pbs":
        from clustrix_futures.schedulers.pbs import PbsBackend

        return PbsBackend()
    raise KeyError(name)
