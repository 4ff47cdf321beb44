"""What a scheduler backend is: a few pure functions from our requests to argv lists and back.

A backend never runs anything itself; the monitor runs its argv through a transport (locally or over
SSH), so every backend works unchanged in both places. Element keys are ``(job_id, index)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

ElementKey = tuple[str, int]

# Where an element stands, as the monitor needs to know it.
QUEUED, RUNNING, ENDED = "queued", "running", "ended"


@dataclass(frozen=True)
class ArraySubmission:
    """One array job: elements ``start`` .. ``start + size - 1`` running ``script`` (a resubmitted element
    has ``size`` 1 and its own ``start``), logs under the patterns."""

    batch: int
    size: int
    script: str
    stdout_pattern: str  # with the backend's array-index placeholder substituted by the backend
    stderr_pattern: str
    throttle: Optional[int]
    resources: Mapping[str, Any]
    start: int = 0

    @property
    def last(self) -> int:
        return self.start + self.size - 1


@dataclass(frozen=True)
class BackendContext:
    """What a backend may need to build its commands: the worker's interpreter and the run directory."""

    python: str
    run_dir: str


@dataclass(frozen=True)
class FinalState:
    state: str  # the scheduler's word: CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, FAILED...
    detail: str = ""


@dataclass
class StatusReport:
    """One status query's answer: where each element it saw stands, and the scheduler's state word."""

    phases: dict[ElementKey, str] = field(default_factory=dict)
    states: dict[ElementKey, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    index_placeholder: str  # how the scheduler names the array index in log paths (%a for SLURM)

    def config_argv(self) -> Optional[list[str]]:
        """A command whose output tells the largest array size, or None if there is no limit to read."""

    def parse_max_array_size(self, stdout: str) -> Optional[int]: ...

    def submit_argv(self, job: ArraySubmission, script_path: str) -> list[str]: ...

    def parse_job_id(self, stdout: str) -> str: ...

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        """ONE command reporting every element of every listed job still known to the queue."""

    def parse_status(self, stdout: str) -> StatusReport: ...

    def final_argv(self, job_id: str) -> list[str]:
        """A command describing the ended elements of one job (for the state of ones without a result)."""

    def parse_final(self, stdout: str) -> dict[ElementKey, FinalState]: ...

    def accounting_argv(self, job_id: str) -> Optional[list[str]]:
        """An accounting query for jobs the scheduler has forgotten (sacct), or None."""

    def parse_accounting(self, stdout: str) -> dict[ElementKey, FinalState]: ...

    def cancel_argv(self, elements: Sequence[ElementKey]) -> list[str]: ...

    def is_transient_error(self, stderr: str) -> bool:
        """True when a failed query means 'scheduler unreachable', not 'no such job'."""
