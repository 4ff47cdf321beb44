"""``ssh``: no scheduler; array elements run as processes on the host itself (the SSH host, or this machine).

Every command is :mod:`clustrix_futures.node.host_supervisor` run by the worker's interpreter on that host: ``launch``
starts a detached supervisor per array, ``status`` reads every listed job's element states in one command,
``final`` gives ended elements' exit codes or signals, ``cancel`` withdraws queued elements and kills running
ones' process groups. The supervisor's throttle is ``max_workers`` (``ArraySubmission.throttle``); without one,
each array runs at most as many elements at once as the host has CPUs. An element run again (``retry_states``)
is a launch of its own, job ``host-BATCH.N``. Elements whose supervisor vanished (killed, host rebooted) end
``LOST``: add ``LOST`` to ``retry_states`` to run them again.

The commands import ``hostrun`` from ``RUN/code`` when the engine staged the package there (a host whose
``python3`` lacks it), else from the interpreter's own installation; ``hostrun`` needs only the standard
library. Resource options (``cpus``, ``mem``, ``time``, ``partition``...) mean nothing without a scheduler and
are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

from clustrix_futures.node import host_supervisor as hostrun
from clustrix_futures.schedulers.base import (
    ENDED,
    QUEUED,
    RUNNING,
    ArraySubmission,
    BackendContext,
    ElementKey,
    FinalState,
    StatusReport,
)
from clustrix_futures.schedulers.command import CommandBackend, report

# ``python -c BOOTSTRAP COMMAND RUN ...``: sys.argv is ['-c', COMMAND, RUN, ...].
BOOTSTRAP = ("import os, sys; code = os.path.join(sys.argv[2], 'code'); "
             "os.path.isdir(code) and sys.path.insert(0, code); "
             "from clustrix_futures.node.host_supervisor import main; main(sys.argv[1:])")
_PHASES = {"QUEUED": QUEUED, "RUNNING": RUNNING}


class HostBackend(CommandBackend):
    name = "ssh"
    index_placeholder = hostrun.INDEX_PLACEHOLDER
    # The host or the connection failed us, not the query: the monitor retries next cycle.
    transient_markers = ("Connection refused", "Connection reset", "Connection closed", "Connection timed out",
                         "connection dropped", "Connection lost", "Broken pipe", "No route to host",
                         "Network is unreachable", "Resource temporarily unavailable", "Cannot allocate memory",
                         "kex_exchange_identification", "Could not resolve hostname")

    def __init__(self, context: BackendContext) -> None:
        self.python = context.python
        self.run_dir = context.run_dir

    def _argv(self, command: str, *arguments: str) -> list[str]:
        return [self.python, "-c", BOOTSTRAP, command, self.run_dir, *arguments]

    def submit_argv(self, job: ArraySubmission, script_path: str) -> list[str]:
        return self._argv("launch", str(job.batch), str(job.start), str(job.size), str(job.throttle or 0),
                          script_path, job.stdout_pattern, job.stderr_pattern)

    def parse_job_id(self, stdout: str, job: ArraySubmission) -> str:
        job_id = (stdout.split() or [""])[-1]
        if hostrun.job_directory("", job_id) is None:
            raise ValueError(f"hostrun launch printed no job id: {stdout!r}")
        return job_id

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return self._argv("status", *job_ids)

    def parse_status(self, stdout: str, job_ids: Sequence[str]) -> StatusReport:
        entries = []
        for line in stdout.splitlines():
            words = line.split()
            parsed = hostrun.split_element(words[0]) if len(words) == 2 else None
            if parsed is not None:
                job, first, last = parsed
                phase = _PHASES.get(words[1], ENDED)
                entries += [((job, index), words[1], phase) for index in range(first, last + 1)]
        return report(entries)

    def final_argv(self, job_id: str) -> list[str]:
        return self._argv("final", job_id)

    def parse_final(self, stdout: str, job_id: str) -> dict[ElementKey, FinalState]:
        states = {}
        for line in stdout.splitlines():
            name, _, rest = line.strip().partition(" ")
            state, _, detail = rest.partition(" ")
            parsed = hostrun.split_element(name)
            if parsed is not None and parsed[1] == parsed[2] and state:
                states[(parsed[0], parsed[1])] = FinalState(state, detail)
        return states

    def cancel_argv(self, elements: Sequence[ElementKey]) -> list[str]:
        return self._argv("cancel", *(f"{job}_{index}" for job, index in elements))
