"""Scheduler backends: one small module each, behind :class:`~clustrix_futures.backends.base.Backend`."""

from __future__ import annotations

from clustrix_futures.backends.base import Backend, BackendContext


def get_backend(name: str, context: BackendContext) -> Backend:
    if name == "slurm":
        from clustrix_futures.backends.slurm import SlurmBackend

        return SlurmBackend()
    raise KeyError(name)
