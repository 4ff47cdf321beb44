"""The node's side of checkpoints (:mod:`clustrix_futures.checkpoint`): the warning signal's handler, and the
call a task that checkpointed runs instead of its payload.

The scheduler signals the element's process (the job script ``exec``s the worker) some time before its limit.
The handler asks the running task's ``checkpoint`` hook for a :class:`~clustrix_futures.checkpoint.Resume`,
writes it as ``batches/task-TASK.resume`` (a task payload: ``cloudpickle.dumps((fn, args, kwargs))``), puts a
checkpoint frame in the journal (:func:`~clustrix_futures.runfiles.journal.checkpoint_frame`) and ends the
element with :data:`CHECKPOINT_EXIT`. When the element runs again, :func:`resumed` gives that task's resume
file instead of its payload. A hook that raises fails its task with that exception, as if the task had raised.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import IO, Any

import cloudpickle

from clustrix_futures.checkpoint import Resume
from clustrix_futures.node import calls
from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.layout import RunDir

CHECKPOINT_EXIT = 75  # EX_TEMPFAIL: ended early on purpose, to run again


def install(signal_name: str, run_dir: RunDir, results: IO[bytes]) -> None:
    """Checkpoint the running task when ``signal_name`` (``USR1``) arrives; ``results`` is the element's
    journal, open for writing."""
    signal.signal(getattr(signal, "SIG" + signal_name), lambda signum, frame: _checkpoint(run_dir, results))


def _checkpoint(run_dir: RunDir, results: IO[bytes]) -> None:
    running = calls.running
    hook = getattr(running[1], "checkpoint", None) if running else None
    if running is None or hook is None:
        return  # nothing to save: the task runs on, and may reach the limit
    task_id, _, args, kwargs = running
    resume = hook(*args, **kwargs)
    if resume is None:
        return
    if not isinstance(resume, Resume):
        raise TypeError(f"a checkpoint hook returns a clustrix_futures.Resume or None, not {type(resume).__name__}")
    _write_private(run_dir.resume(task_id), cloudpickle.dumps((resume.fn, resume.args, resume.kwargs), protocol=5))
    results.write(journal.checkpoint_frame(task_id, time.time()))
    calls.flush_output()
    results.flush()
    os.fsync(results.fileno())
    os._exit(CHECKPOINT_EXIT)  # at once: the task must not run on past the checkpoint it saved


def _write_private(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it), never through a symlink."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def resumed(run_dir: RunDir, task_id: int, payload: bytes) -> bytes:
    """The payload to run for ``task_id``: its resume file's if it checkpointed in an earlier run, else
    ``payload``. A resume file this account did not write is never loaded: the element ends saying so."""
    try:
        fd = os.open(run_dir.resume(task_id), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return payload
    except OSError as exc:  # ELOOP: a symlink planted in its place
        sys.exit(f"clustrix_futures: task {task_id}'s resume file cannot be opened safely: {exc}")
    with os.fdopen(fd, "rb") as file:
        owner = os.fstat(file.fileno()).st_uid
        if owner != os.getuid():
            sys.exit(f"clustrix_futures: task {task_id}'s resume file {run_dir.resume(task_id)} belongs to uid "
                     f"{owner}, not to this account: it is not loaded")
        data: Any = file.read()
    return bytes(data)
