"""The schedulers, in one registry: for each name its :class:`Capabilities` and how to make it.

:func:`make_scheduler` gives the :class:`~clustrix_futures.schedulers.base.Scheduler` of a backend name, and
:func:`capabilities` what the rest of the package needs to know about it before it has one (whether there is
an interpreter to probe, a filesystem for scripts and logs, ...). The protocols, value types and exceptions
are in :mod:`clustrix_futures.schedulers.base`; ``local`` is no scheduler (the local engine runs no jobs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clustrix_futures.config import Settings
from clustrix_futures.errors import ConfigError
from clustrix_futures.remote.transport import Transport
from clustrix_futures.schedulers.base import Backend, BackendContext, Scheduler
from clustrix_futures.schedulers.command import CommandScheduler
from clustrix_futures.schedulers.host import HostBackend
from clustrix_futures.schedulers.kubernetes import KubernetesScheduler
from clustrix_futures.schedulers.pbs import PbsBackend
from clustrix_futures.schedulers.sge import SgeBackend
from clustrix_futures.schedulers.slurm import SlurmBackend

__all__ = ["SCHEDULERS", "Capabilities", "capabilities", "check_checkpoints", "check_resources", "make_scheduler"]


@dataclass(frozen=True)
class Capabilities:
    """What differs between schedulers, beyond their commands.

    ``api``: scheduled through an API, not commands run through the transport: there is no interpreter to
    probe (it is the image's) and no files on the transport; job scripts and logs are the API's (a pod's log).
    ``needs_s3``: its nodes do not see the client's filesystem; payloads and results go through S3 storage.
    ``states_array_limit``: its configuration query always names the largest array, so a query that gives
    none means the controller did not answer.
    ``typed_gpus``: it takes a GPU type (``gpus="a100:2"``); the others take a count only.
    ``warning_signal``: it signals an element before its time limit (``signal_before_end``).
    ``index_lists``: it submits an array of listed indices (``--array=2,5,9``): elements of one batch that
    run again in one cycle go out as one array.
    """

    api: bool = False
    needs_s3: bool = False
    states_array_limit: bool = False
    typed_gpus: bool = False
    warning_signal: bool = False
    index_lists: bool = False


LogPath = Callable[[int, str, str], str]


@dataclass(frozen=True)
class _Entry:
    capabilities: Capabilities
    make: Callable[[Settings, BackendContext, Transport, LogPath], Scheduler]


def _command(backend: Callable[[BackendContext], Backend]) -> Callable[[Settings, BackendContext, Transport, LogPath],
                                                                        Scheduler]:
    """A maker of the command scheduler running ``backend``'s commands."""
    return lambda settings, context, transport, log_path: CommandScheduler(backend(context), transport, log_path)


_REGISTRY: dict[str, _Entry] = {
    "slurm": _Entry(Capabilities(states_array_limit=True, typed_gpus=True, warning_signal=True,
                                 index_lists=True),
                    _command(lambda context: SlurmBackend(context.requeue, context.warning_seconds))),
    "ssh": _Entry(Capabilities(), _command(HostBackend)),
    "sge": _Entry(Capabilities(states_array_limit=True), _command(SgeBackend)),
    "pbs": _Entry(Capabilities(), _command(PbsBackend)),
    "kubernetes": _Entry(Capabilities(api=True, needs_s3=True),
                         lambda settings, context, transport, log_path: KubernetesScheduler(settings, context)),
}
SCHEDULERS = tuple(_REGISTRY)  # the backend names that are schedulers (every one but "local")


def capabilities(name: str) -> Capabilities:
    """The capabilities of the scheduler ``name`` (one of :data:`SCHEDULERS`; KeyError for another)."""
    return _REGISTRY[name].capabilities


def check_resources(name: str, resources: Mapping[str, Any]) -> None:
    """Raise ConfigError for resources the scheduler ``name`` cannot express (a typed ``gpus`` without
    ``typed_gpus``); nothing for a backend that is no scheduler (it ignores resources)."""
    gpus = resources.get("gpus")
    if isinstance(gpus, str) and name in _REGISTRY and not _REGISTRY[name].capabilities.typed_gpus:
        typed = ", ".join(n for n, entry in _REGISTRY.items() if entry.capabilities.typed_gpus)
        raise ConfigError(f"gpus={gpus!r}: the {name} backend takes a GPU count only (gpus={gpus.split(':')[1]}); "
                          f"a GPU type can be requested on: {typed}")


def check_checkpoints(settings: Settings) -> None:
    """Raise ConfigError where ``signal_before_end`` is set but cannot work: a scheduler that sends no warning
    signal, or S3 storage (an S3 element keeps no journal file to note its checkpoint in)."""
    if settings["signal_before_end"] is None or settings.backend not in _REGISTRY:
        return
    if not _REGISTRY[settings.backend].capabilities.warning_signal:
        able = ", ".join(n for n, entry in _REGISTRY.items() if entry.capabilities.warning_signal)
        raise ConfigError(f"signal_before_end: the {settings.backend} backend sends no warning signal before an "
                          f"element's time limit; checkpoints work on: {able}")
    if settings["storage"]:
        raise ConfigError("signal_before_end works with the run directory on a filesystem the nodes see; it is "
                          "not supported with S3 storage")


def make_scheduler(settings: Settings, context: BackendContext, transport: Transport, log_path: LogPath) -> Scheduler:
    """The scheduler of ``settings.backend`` for a run: a command backend whose commands run through
    ``transport`` (``log_path(batch, index as text, stream)`` names an element's log on its filesystem), or
    an API scheduler. Raises ConfigError when the scheduler cannot be set up (a missing client library or
    option) and KeyError for a backend that is no scheduler."""
    return _REGISTRY[settings.backend].make(settings, context, transport, log_path)
