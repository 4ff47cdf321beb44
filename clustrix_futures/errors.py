"""The public exceptions.

Every failure that ends a future with something other than the task's own exception is one of these, so a
caller can tell "my function raised" from "the machinery failed" with one ``except ClusterFuturesError``.
"""

from __future__ import annotations

from typing import Optional


class ClusterFuturesError(Exception):
    """Base class of every exception this library raises on its own account."""


class ConfigError(ClusterFuturesError, ValueError):
    """A configuration problem: unknown option, backend or profile, a bad value, an unusable host or interpreter.

    Raised before any work is submitted.
    """


class HostKeyError(ConfigError):
    """The SSH host key of the cluster is unknown or changed: the connection was refused before logging in."""


class JobFailedError(ClusterFuturesError):
    """The job or worker that was running a task ended without delivering the task's outcome.

    ``state`` names what happened, in the scheduler's words where there is a scheduler (``CANCELLED``,
    ``TIMEOUT``, ``OUT_OF_MEMORY``, ``NODE_FAIL``, ``FAILED``...) or ours (``WORKER_DIED``,
    ``SUBMIT_FAILED``, ``CONNECTION_LOST``). ``job_id`` identifies the job (for arrays, the element), and
    ``log_tail`` holds the end of its stderr when there is one.
    """

    def __init__(
        self, message: str, *, state: str, job_id: Optional[str] = None, log_tail: str = ""
    ) -> None:
        super().__init__(message)
        self.state = state
        self.job_id = job_id
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = super().__str__()
        if self.log_tail:
            text += "\n--- end of the job's stderr ---\n" + self.log_tail
        return text

    def __reduce__(self) -> tuple:
        return (_rebuild_job_failed, (self.args[0], self.state, self.job_id, self.log_tail))


def _rebuild_job_failed(message: str, state: str, job_id: Optional[str], log_tail: str) -> JobFailedError:
    return JobFailedError(message, state=state, job_id=job_id, log_tail=log_tail)


class RemoteError(ClusterFuturesError):
    """A task raised an exception that could not be brought back as itself (it did not pickle or unpickle).

    ``type_name`` is the qualified name of the original exception's class, ``message`` its ``str()``, and
    ``traceback`` the remote traceback text.
    """

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __reduce__(self) -> tuple:
        return (RemoteError, (self.type_name, self.message, self.traceback))


class ExecutorBrokenError(ClusterFuturesError, RuntimeError):
    """The executor cannot run work any more (for example, its initializer raised in a worker)."""
