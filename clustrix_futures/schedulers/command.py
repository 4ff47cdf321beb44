"""The command schedulers (SLURM, Grid Engine, PBS, the ``ssh`` host runner): :class:`CommandScheduler` runs a
:class:`~clustrix_futures.schedulers.base.Backend`'s argv lists through a transport, here or over SSH.

It writes each job script first, counts the commands it runs by name in ``commands``, and decides what a
failed command means: a failure whose stderr the backend calls transient is "scheduler unreachable" (a status
of None, :class:`~clustrix_futures.schedulers.base.SchedulerUnreachable` for a submission), any other is the
request's own failure. :class:`CommandBackend` holds the defaults of the ``Backend`` protocol that the
backends fill in the same way, and :func:`phase_of` and :func:`report` the shape their status parsers share.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

from clustrix_futures.remote.transport import Transport
from clustrix_futures.schedulers.base import (
    ENDED,
    QUEUED,
    RUNNING,
    ArraySubmission,
    Backend,
    ElementKey,
    FinalState,
    Limits,
    SchedulerUnreachable,
    StatusReport,
    SubmitRefused,
)

log = logging.getLogger(__name__)

NOT_ENDED = ("PENDING", "RUNNING", "REQUEUED")


class CommandScheduler:
    """A :class:`~clustrix_futures.schedulers.base.Scheduler` from an argv backend and the transport that runs
    its commands. The job script and the logs live in the run's host directory (``RunDir.host``), on the
    transport's filesystem; ``log_path(batch, index as text, stream)`` names an element's log there."""

    def __init__(self, backend: Backend, transport: Transport, log_path: Callable[[int, str, str], str]) -> None:
        self.backend = backend
        self.transport = transport
        self.name = backend.name
        self.index_placeholder = backend.index_placeholder
        self.commands: dict[str, int] = {}
        self._log_path = log_path
        self._accounting = True  # until an accounting query fails: this cluster keeps none

    async def _run(self, argv: list[str]) -> Any:
        self.commands[argv[0]] = self.commands.get(argv[0], 0) + 1
        return await self.transport.run(argv)

    async def max_array_size(self) -> Optional[int]:
        argv = self.backend.config_argv()
        if not argv:
            return None
        answer = await self._run(argv)
        return self.backend.parse_max_array_size(answer.stdout) if answer.ok else None

    async def limits(self, partition: Optional[str]) -> Limits:
        argv = self.backend.limits_argv(partition)
        if not argv:
            return Limits()
        answer = await self._run(argv)
        return self.backend.parse_limits(answer.stdout) if answer.ok else Limits()

    def submit_argv(self, job: ArraySubmission) -> list[str]:
        """The command :meth:`submit` runs for ``job`` (run nothing: ``ex.job_script()`` shows it)."""
        return self.backend.submit_argv(job, job.script)

    async def submit(self, job: ArraySubmission, script: str) -> str:
        await self.transport.write(job.script, script.encode(), 0o700)
        result = await self._run(self.submit_argv(job))
        try:
            job_id = self.backend.parse_job_id(result.stdout, job) if result.ok else ""
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
        return self.backend.parse_status(status.stdout, job_ids) if status.ok else StatusReport()

    async def final(self, job_id: str) -> Optional[dict[ElementKey, FinalState]]:
        result = await self._run(self.backend.final_argv(job_id))
        if not result.ok and self.backend.is_transient_error(result.stderr):
            return None
        states = self.backend.parse_final(result.stdout, job_id) if result.ok else {}
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
        if not result.ok:  # they may still run: the monitor writes skip markers for all their tasks
            log.warning("could not withdraw cancelled elements: %s", result.describe())
            return set(elements)
        return set()

    async def log_tail(self, key: ElementKey, batch: int, size: int) -> bytes:
        path = self._log_path(batch, str(key[1]), "err")
        return await self.transport.read_span(path, 0, None, size) or b""

    async def close(self, remove: bool) -> None:
        pass


class CommandBackend:
    """Defaults of the :class:`~clustrix_futures.schedulers.base.Backend` protocol. A subclass sets ``name``,
    ``index_placeholder`` and, where it has them, ``transient_markers`` (stderr fragments meaning "scheduler
    unreachable") and ``max_array_pattern`` (a regular expression whose group 1 is the largest array size in
    ``config_argv``'s output)."""

    name = ""
    index_placeholder = ""
    transient_markers: tuple[str, ...] = ()
    max_array_pattern: Optional[str] = None

    def config_argv(self) -> Optional[list[str]]:
        return None

    def parse_max_array_size(self, stdout: str) -> Optional[int]:
        found = re.search(self.max_array_pattern, stdout, re.MULTILINE) if self.max_array_pattern else None
        return int(found.group(1)) if found else None

    def limits_argv(self, partition: Optional[str]) -> Optional[list[str]]:
        return None

    def parse_limits(self, stdout: str) -> Limits:
        return Limits()

    def accounting_argv(self, job_id: str) -> Optional[list[str]]:
        return None

    def parse_accounting(self, stdout: str) -> dict[ElementKey, FinalState]:
        return {}

    def is_transient_error(self, stderr: str) -> bool:
        return any(marker in stderr for marker in self.transient_markers)


def phase_of(state: str, queued: Iterable[str], running: Iterable[str]) -> str:
    """A scheduler's state word to our phase: queued, running, or (anything else) ended."""
    if state in queued:
        return QUEUED
    if state in running:
        return RUNNING
    return ENDED


def report(entries: Iterable[tuple[ElementKey, str, str]]) -> StatusReport:
    """A status report from ``(element, state word, phase)`` triples."""
    made = StatusReport()
    for key, state, phase in entries:
        made.states[key] = state
        made.phases[key] = phase
    return made
