"""What a scheduler is to the rest of the package: the :class:`Scheduler` protocol the monitor drives, the argv
:class:`Backend` protocol behind the command schedulers, the values they exchange and the two exceptions.

The monitor asks a :class:`Scheduler`, as coroutines, to submit array jobs, to report in ONE query where the
elements of every live job stand, to give the final states of elements that left the queue without a result,
and to withdraw elements. It names an element by its :data:`ElementKey` ``(job_id, index)``: the job id is the
scheduler's own (opaque to the monitor, recorded in the run directory and given back on attach), the index is
the element's position in its batch, whatever job runs it.

Two kinds of scheduler meet that one interface:

* command schedulers (SLURM, Grid Engine, PBS, the ``ssh`` host runner): a :class:`Backend` is a set of pure
  functions from our requests to argv lists and from their output back to values, and
  :class:`~clustrix_futures.schedulers.command.CommandScheduler` runs those argv lists through a transport
  (here or over SSH). A backend never runs anything and keeps no state: what it needs beyond the arguments of
  a call is fixed at construction, in its :class:`BackendContext`;
* API schedulers (Kubernetes): a class that makes the API calls itself and implements :class:`Scheduler`
  directly (:mod:`clustrix_futures.schedulers.kubernetes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    from clustrix_futures.config import Settings

ElementKey = tuple[str, int]

# Where an element stands, as the monitor needs to know it.
QUEUED, RUNNING, ENDED = "queued", "running", "ended"


class SubmitRefused(Exception):
    """The scheduler refused a submission; the message says why, in its words."""


class SchedulerUnreachable(Exception):
    """A submission did not reach the scheduler (it could not be contacted): submit it again later."""


@dataclass(frozen=True)
class ArraySubmission:
    """One array job: elements ``start`` .. ``start + size - 1`` running ``script`` (a resubmitted element
    has ``size`` 1 and its own ``start``), or else the elements ``indices`` (elements of one batch run again
    together, where the scheduler takes a list of indices: ``Capabilities.index_lists``), logs under the
    patterns."""

    batch: int
    size: int
    script: str
    stdout_pattern: str  # with the backend's array-index placeholder substituted by the backend
    stderr_pattern: str
    throttle: Optional[int]
    resources: Mapping[str, Any]
    start: int = 0
    indices: tuple[int, ...] = ()

    @property
    def last(self) -> int:
        return self.start + self.size - 1


@dataclass(frozen=True)
class BackendContext:
    """What a backend needs beyond the arguments of its calls, fixed for a run: the worker's interpreter, the
    run's directory on the scheduler's side, and the PBS flavour (``pbspro`` or ``torque``; option ``flavor``).

    Per-submission choices (Grid Engine's parallel environment ``pe`` among them: ``ex.options(pe=...)`` may
    change it) travel in :attr:`ArraySubmission.resources` instead."""

    python: str
    run_dir: str
    pbs_flavor: str = "pbspro"
    requeue: bool = True  # whether the scheduler may run an element again itself (SLURM: not --no-requeue)
    warning_seconds: Optional[int] = None  # signal_before_end: when to send the checkpoint signal

    @classmethod
    def of(cls, settings: Settings, python: str, run_dir: str) -> BackendContext:
        """The context of a run with these settings, whose worker runs ``python`` in ``run_dir``. Where the
        monitor runs preempted or node-failed elements again itself (``retry_states``, ``retry_policy``), the
        scheduler must not as well: it would run every task of the element, not only the unfinished ones."""
        retried = set(settings["retry_states"]) | set(settings["retry_policy"] or {})
        return cls(python, run_dir, pbs_flavor=str(settings["flavor"]),
                   requeue=not retried & {"PREEMPTED", "NODE_FAIL"}, warning_seconds=settings["signal_before_end"])


@dataclass(frozen=True)
class FinalState:
    """How an element ended, as the scheduler tells it: its state word and what else it said (a reason, an exit
    code), for the error of a task whose element left no result."""

    state: str  # the scheduler's word: CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, FAILED...
    detail: str = ""


@dataclass
class StatusReport:
    """One status query's answer: where each element it saw stands, and the scheduler's state word."""

    phases: dict[ElementKey, str] = field(default_factory=dict)
    states: dict[ElementKey, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """The largest memory (MB) and time (seconds) one element of a partition may ask for, and what it gets when
    it asks for none; None where the scheduler sets no limit or tells none."""

    mem_mb: Optional[int] = None
    seconds: Optional[int] = None
    default_mem_mb: Optional[int] = None
    default_mem_per_cpu_mb: Optional[int] = None  # where the default is per CPU (SLURM's DefMemPerCPU)
    default_seconds: Optional[int] = None


class Scheduler(Protocol):
    """What the monitor asks of a scheduler. Every method is a coroutine run on the monitor's event loop; none
    may block the loop (slow calls go to a thread or a subprocess).

    ``name`` is the backend's name (``slurm``...); ``index_placeholder`` is how the scheduler names the array
    index in log paths (``%a`` for SLURM), which the monitor puts in ``ArraySubmission``'s log patterns;
    ``commands`` counts what the scheduler issued, by name: the command (``sbatch``, ``squeue``...) or the API
    call (``list_namespaced_pod``...).
    """

    name: str
    index_placeholder: str
    commands: dict[str, int]

    async def max_array_size(self) -> Optional[int]:
        """Return the largest array the scheduler accepts, or None if it has no limit that can be read.

        Called once, at start-up, before any submission. Raises ConfigError when the scheduler cannot be used
        at all (no client library, no access); a scheduler that merely did not answer returns None.
        """

    async def limits(self, partition: Optional[str]) -> Limits:
        """Return the limits of ``partition`` (None: the default one), for ``retry_policy``'s right-sizing; an
        empty :class:`Limits` where none can be read."""

    async def submit(self, job: ArraySubmission, script: str) -> str:
        """Submit ``job``, whose elements run ``script`` (a shell script's text), and return its job id.

        Raises :class:`SubmitRefused` when the scheduler refused the job (the monitor fails its tasks) and
        :class:`SchedulerUnreachable` when the submission did not reach it (the monitor submits it again
        later). Returns once the scheduler knows the job: a status query after it reports the job's elements.
        """

    async def status(self, job_ids: Sequence[str]) -> Optional[StatusReport]:
        """Report, in ONE query whatever their number, every element of the listed jobs the scheduler still
        knows as queued or running, with its phase and state word.

        Called once per monitor cycle with the jobs that have live elements. An element missing from the
        report has left the queue. Returns None when the scheduler could not be reached: the monitor concludes
        nothing from that cycle. Other errors propagate to the monitor.
        """

    async def final(self, job_id: str) -> Optional[dict[ElementKey, FinalState]]:
        """Return the final states of the job's ended elements that the scheduler still knows (an element it
        forgot is missing: the monitor fails its tasks as lost), or None when the scheduler could not be
        reached (the monitor asks again next cycle).

        Called for elements that left the queue without their result, after the grace period.
        """

    async def cancel(self, elements: Sequence[ElementKey]) -> set[ElementKey]:
        """Withdraw the elements (queued ones, whose every task was cancelled) and return those that will run
        anyway: the monitor writes skip markers for their tasks. A failed withdrawal is logged, not raised, and
        returns every element (any of them may still run)."""

    async def log_tail(self, key: ElementKey, batch: int, size: int) -> bytes:
        """Return the last ``size`` bytes of an ended element's stderr, or b"" if there is none to read.

        Called for the error message of an element that failed; never raises for a missing log.
        """

    async def close(self, remove: bool) -> None:
        """End the scheduler's use: the run is over. With ``remove``, the run's records at the scheduler (not
        its jobs' results) may be deleted too. Called once, last; must not raise."""


class Backend(Protocol):
    """The commands of a command scheduler, as pure functions: each ``*_argv`` method builds one command's argv
    and the matching ``parse_*`` method reads that command's stdout. None of them runs anything, touches a file
    or keeps state between calls; :class:`~clustrix_futures.schedulers.command.CommandScheduler` runs the argv
    lists and decides what a failed command means.

    ``name`` is the backend's name; ``index_placeholder`` is how the scheduler (or the backend, which then
    replaces it in :meth:`submit_argv`) names the array index in log paths.
    """

    name: str
    index_placeholder: str

    def config_argv(self) -> Optional[list[str]]:
        """Return a command whose output tells the largest array size, or None if there is no limit to read."""

    def parse_max_array_size(self, stdout: str) -> Optional[int]:
        """Return the largest array size ``config_argv``'s command printed, or None if its output names none."""

    def limits_argv(self, partition: Optional[str]) -> Optional[list[str]]:
        """Return a command whose output tells the limits of ``partition`` (None: the default), or None."""

    def parse_limits(self, stdout: str) -> Limits:
        """Return the limits ``limits_argv``'s command printed."""

    def submit_argv(self, job: ArraySubmission, script_path: str) -> list[str]:
        """Return the command that submits ``job``, each element running the script at ``script_path`` (already
        written, executable) with its logs at the job's patterns. The command prints the job id."""

    def parse_job_id(self, stdout: str, job: ArraySubmission) -> str:
        """Return the id of ``job`` from its submission's output; raise ValueError if the output names none.

        The id is what the other methods receive as ``job_id`` and in element keys, also in a later process
        (it is recorded in the run directory): a backend whose scheduler cannot show an element's index puts
        the index in the id.
        """

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        """Return ONE command reporting every element of every listed job still known to the queue."""

    def parse_status(self, stdout: str, job_ids: Sequence[str]) -> StatusReport:
        """Return where each element stands in ``status_argv(job_ids)``'s output. Elements of other jobs may be
        reported too (the monitor ignores them); an element the output does not show is missing."""

    def final_argv(self, job_id: str) -> list[str]:
        """Return a command describing the ended elements of one job (for the state of ones without a result)."""

    def parse_final(self, stdout: str, job_id: str) -> dict[ElementKey, FinalState]:
        """Return the final state of each element in ``final_argv(job_id)``'s output; still-running elements
        may be included with their state word (``PENDING``, ``RUNNING``: the caller drops them)."""

    def accounting_argv(self, job_id: str) -> Optional[list[str]]:
        """Return an accounting query for a job the scheduler has forgotten (``sacct``), or None if there is
        none. Asked only when ``final_argv``'s command knew no element of the job; a failing query is not asked
        again in the run."""

    def parse_accounting(self, stdout: str) -> dict[ElementKey, FinalState]:
        """Return the final state of each element in ``accounting_argv(job_id)``'s output."""

    def cancel_argv(self, elements: Sequence[ElementKey]) -> list[str]:
        """Return ONE command withdrawing the elements (of one job or several) from the queue, or ending those
        that started meanwhile."""

    def is_transient_error(self, stderr: str) -> bool:
        """Return True when a failed command's stderr means 'scheduler unreachable, try again', False when it
        means the request itself failed ('no such job', a refused submission)."""
