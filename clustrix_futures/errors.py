"""The public exceptions.

Every failure that ends a future with something other than the task's own exception is one of these, so a
caller can tell "my function raised" from "the machinery failed" with one ``except ClusterFuturesError``.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from typing import Optional


class ClusterFuturesError(Exception):
    """Base class of every exception this library raises on its own account.

    A task's own exception is never wrapped in it: ``except ClusterFuturesError`` catches only what the
    machinery (configuration, connection, scheduler, worker) caused.
    """


class ConfigError(ClusterFuturesError, ValueError):
    """A configuration problem: unknown option, backend or profile, a bad value, an unusable host or interpreter.

    Raised before any work is submitted: by the ``ClusterPoolExecutor`` constructor (which also connects and
    probes the cluster's interpreter on a scheduler backend), ``options()`` and ``attach()``. The message names
    what is wrong and how to fix it. A ``ValueError`` too, so code that catches bad arguments catches it.
    """


class HostKeyError(ConfigError):
    """The SSH host key of the cluster is unknown or changed: the connection was refused before logging in.

    Host keys are always verified against ``known_hosts`` (the option, default ``~/.ssh/known_hosts``); the
    message says how to check the key's fingerprint and add it. Never retried, also on reconnection.
    """


class JobFailedError(ClusterFuturesError):
    """The job or worker that was running a task ended without delivering the task's outcome.

    ``state`` names what happened, in the scheduler's words where there is a scheduler (``CANCELLED``,
    ``TIMEOUT``, ``OUT_OF_MEMORY``, ``NODE_FAIL``, ``PREEMPTED``, ``FAILED``, ``KILLED``...) or ours:
    ``WORKER_DIED`` (a local worker process died), ``SUBMIT_FAILED`` (the scheduler rejected the submission,
    or could not be reached for ``reconnect_give_up`` seconds), ``CONNECTION_LOST`` (the SSH connection could
    not be restored), ``MONITOR_FAILED`` (the job monitor gave up), ``LOST`` (the element left the queue
    without a result and the scheduler no longer knows it), ``CORRUPTED_RESULT``. ``job_id`` identifies the
    job (for arrays, the element, as ``JOB_INDEX``; a local worker's pid), and ``log_tail`` holds the end of
    its stderr when there is one (``str()`` of the error appends it).

    Elements that ended in one of ``retry_states`` (``PREEMPTED``, ``NODE_FAIL``, ``BOOT_FAIL`` by default)
    are run again ``retries`` times first; the error is raised only when no attempt delivered the outcome.
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
    """A task raised an exception that could not be brought back as itself.

    ``type_name`` is the qualified name of the original exception's class, ``message`` its ``str()``,
    ``traceback`` the remote traceback text, and ``reason`` why it could not be rebuilt (empty if unknown).
    An exception comes back as itself, never as a ``RemoteError``, whenever its class can be had on the client
    (importable there, or shipped by value from ``__main__`` or a local module) and its ``args`` and
    ``__dict__`` pickle, even when its ``__init__`` takes other arguments than ``args`` (it is rebuilt without
    calling ``__init__``: see :mod:`clustrix_futures.runfiles.travel`). It is a ``RemoteError`` when:

    - its ``args`` or attributes hold something that does not pickle (a lock, a socket, an open file...);
    - its class's ``__new__`` cannot run with ``args`` alone;
    - its class is not importable on the client (a module installed only where the task ran);
    - unpickling it on the client raised (``SystemExit`` and ``KeyboardInterrupt`` included).

    A task's *result* that does not unpickle on the client also fails just its future with a ``RemoteError``
    (``type_name`` names what unpickling raised). A result that cannot be pickled on the node is a
    ``TypeError`` that says so.
    """

    def __init__(self, type_name: str, message: str, traceback: str, reason: str = "") -> None:
        super().__init__(f"{type_name}: {message}" + (f" ({reason})" if reason else ""))
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.reason = reason

    def __reduce__(self) -> tuple:
        return (RemoteError, (self.type_name, self.message, self.traceback, self.reason))


class ExecutorBrokenError(ClusterFuturesError, BrokenProcessPool):
    """The executor cannot run work any more (for example, its initializer raised in a worker).

    Every pending future fails with it, and so does every later ``submit``. A
    ``concurrent.futures.process.BrokenProcessPool`` (so a ``BrokenExecutor`` and a ``RuntimeError``) too: code
    written for ``ProcessPoolExecutor`` catches it as it catches the pool's own.
    """
