"""What the monitor asks of a scheduler, as coroutines: :class:`Scheduler`.

Two kinds of backend meet this one interface:

* command schedulers (SLURM, Grid Engine, PBS, the ``ssh`` host runner): a
  :class:`~clustrix_futures.schedulers.base.Backend` builds argv lists and parses their output, and
  :class:`CommandScheduler` runs them through the transport (here or over SSH), writing each job script
  first; every backend module stays a set of pure functions;
* API schedulers (Kubernetes): a class that makes the API calls itself and implements :class:`Scheduler`
  directly (:mod:`clustrix_futures.schedulers.kubernetes`).

``commands`` counts what each scheduler issued, by name: the command (``sbatch``, ``squeue``...) or the API
call (``list_namespaced_pod``...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Optional, Protocol

from clustrix_futures.config import Settings
from clustrix_futures.remote.transport import Transport
from clustrix_futures.schedulers import get_backend
from clustrix_futures.schedulers.base import (
    ArraySubmission,
    Backend,
    BackendContext,
    ElementKey,
    FinalState,
    StatusReport,
)

log = logging.getLogger(__name__)

NOT_ENDED = ("PENDING", "RUNNING", "REQUEUED")


class SubmitRefused(Exception):
    """The scheduler refused a submission; the message says why, in its words."""


class SchedulerUnreachable(Exception):
    """A submission did not reach the scheduler (it could not be contacted): submit it again later."""


class Scheduler(Protocol):
    name: str
    index_placeholder: str  # how the scheduler names the array index in log paths
    commands: dict[str, int]

    async def max_array_size(self) -> Optional[int]:
        """The largest array the scheduler accepts, or None if it has no limit we can read. Asked once, at
        start-up: a scheduler that cannot be used raises ConfigError here."""

    async def submit(self, job: ArraySubmission, script: str) -> str:
        """Submit ``job``, whose elements run ``script`` (a shell script's text); return the job id or raise
        :class:`SubmitRefused`."""

    async def status(self, job_ids: Sequence[str]) -> Optional[StatusReport]:
        """ONE query for every element of the listed jobs still known as queued or running; None when the
        scheduler could not be reached (nothing is concluded from that cycle)."""

    async def final(self, job_id: str) -> Optional[dict[ElementKey, FinalState]]:
        """The final states of the job's ended elements; None when the scheduler could not be reached."""

    async def cancel(self, elements: Sequence[ElementKey]) -> set[ElementKey]:
        """Withdraw queued elements; return those that will run anyway (their tasks must be skipped)."""

    async def log_tail(self, key: ElementKey, batch: int, size: int) -> bytes:
        """The last ``size`` bytes of an ended element's stderr, or b"" if there is none to read."""

    async def close(self, remove: bool) -> None:
        """The run is over; with ``remove``, its records at the scheduler may go too."""


class CommandScheduler:
    """A :class:`Scheduler` from an argv backend and the transport that runs its commands. The job script and
    the logs live in the run's host directory (``RunDir.host``), on the transport's filesystem."""

    def __init__(self, backend: Backend, transport: Transport, log_path: Callable[[int, str, str], str]) -> None:
        self.backend = backend
        self.transport = transport
        self.name = backend.name
        self.index_placeholder = backend.index_placeholder
        self.commands: dict[str, int] = {}
        self._log_path = log_path  # (batch, index as text, stream) -> path
        self._accounting = True

    async def _run(self, argv: list[str]) -> Any:
        self.commands[argv[0]] = self.commands.get(argv[0], 0) + 1
        return await self.transport.run(argv)

    async def max_array_size(self) -> Optional[int]:
        argv = self.backend.config_argv()
        if not argv:
            return None
        answer = await self._run(argv)
        return self.backend.parse_max_array_size(answer.stdout) if answer.ok else None

    async def submit(self, job: ArraySubmission, script: str) -> str:
        await self.transport.write(job.script, script.encode(), 0o700)
        result = await self._run(self.backend.submit_argv(job, job.script))
        try:
            job_id = self.backend.parse_job_id(result.stdout) if result.ok else ""
        except ValueError:
            job_id = ""
        if not job_id:
            if not result.ok and self.backend.is_transient_error(result.stderr):
                raise SchedulerUnreachable(result.describe())
            raise SubmitRefused(result.describe())
        return job_id

    async def status(self, job_ids: Sequence[str]) -> Optional[StatusReport]:
        status = await self._run(self.backend.status_argv(job_ids))
        if not status.ok and self.backend.is_transient_error(status.stderr):
            log.warning("status query failed, will retry: %s", status.describe())
            return None
        return self.backend.parse_status(status.stdout) if status.ok else StatusReport()

    async def final(self, job_id: str) -> Optional[dict[ElementKey, FinalState]]:
        result = await self._run(self.backend.final_argv(job_id))
        if not result.ok and self.backend.is_transient_error(result.stderr):
            return None
        states = self.backend.parse_final(result.stdout) if result.ok else {}
        accounting = self.backend.accounting_argv(job_id) if self._accounting and not states else None
        if accounting:
            answer = await self._run(accounting)
            if answer.ok:
                states = self.backend.parse_accounting(answer.stdout)
            else:
                self._accounting = False  # no accounting on this cluster: never required, not asked again
        return {k: v for k, v in states.items() if v.state not in NOT_ENDED}

    async def cancel(self, elements: Sequence[ElementKey]) -> set[ElementKey]:
        result = await self._run(self.backend.cancel_argv(elements))
        if not result.ok:
            log.warning("could not withdraw cancelled elements: %s", result.describe())
        return set()

    async def log_tail(self, key: ElementKey, batch: int, size: int) -> bytes:
        path = self._log_path(batch, str(key[1]), "err")
        data = (await self.transport.read_many([path]))[path]
        return (data or b"")[-size:]

    async def close(self, remove: bool) -> None:
        pass


def make_scheduler(settings: Settings, context: BackendContext, transport: Transport,
                   log_path: Callable[[int, str, str], str]) -> Scheduler:
    """The scheduler of ``settings.backend``: an API scheduler, or a command backend run through ``transport``."""
    if settings.backend == "kubernetes":
        from clustrix_futures.schedulers.kubernetes import KubernetesScheduler

        return KubernetesScheduler(settings, context)
    return CommandScheduler(get_backend(settings.backend, context), transport, log_path)
