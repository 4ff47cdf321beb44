"""The local backend: a pool of worker processes fed over sockets by one manager thread.

Why not ``ProcessPoolExecutor`` or loky underneath: both mark the whole pool broken when one worker dies and
fail every pending future with it. Here the manager knows which task each worker is running, so a worker
that dies (``os._exit``, SIGKILL, segfault) fails exactly that task with
``JobFailedError(state="WORKER_DIED")``, and a fresh worker takes its place. A death is seen from the process
itself (its pidfd, or a poll every second where there is none), not only from its socket: a task that forks a
daemon child leaves the socket open in that child after the worker dies.

An interrupted ``shutdown`` (a second Ctrl-C while it waits) kills every worker before the interrupt goes on,
and fails what they ran with ``ExecutorBrokenError``, so no worker outlives the client.

Workers are plain ``python -m clustrix_futures.node.worker pool FD`` subprocesses
(:mod:`clustrix_futures.local.workers`), not forks and not multiprocessing children: everything reaches them
cloudpickled, so they never re-import the user's ``__main__`` (a script without a ``__main__`` guard works) and
no thread state is forked. No file is written: tasks and outcomes travel over a socket pair per worker, and so
do the workers' log records (``LOG`` frames, handed to this process's loggers). With ``max_tasks_per_child`` a
worker is retired after that many tasks (its connection closed, so it ends) and a fresh one takes its place.

Once the interpreter has begun exiting (``threading._register_atexit``, as ``concurrent.futures`` does), every
pool finishes its queued work and ``submit`` raises ``RuntimeError``.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn, Optional

from clustrix_futures.errors import ConfigError, ExecutorBrokenError, JobFailedError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.local import logs
from clustrix_futures.local.workers import Entry, Start, Worker
from clustrix_futures.mapping.sizing import local_sizes
from clustrix_futures.node import worker as worker_module
from clustrix_futures.node.logs import LOG
from clustrix_futures.remote.files import RemoteFiles, local_files
from clustrix_futures.runfiles.layout import RunDir
from clustrix_futures.runfiles.outcomes import Outcome, loads_outcome
from clustrix_futures.runfiles.parts import Held, Part
from clustrix_futures.serialization import resolve

log = logging.getLogger(__name__)

_STARTUP_FAILURES_TOLERATED = 3


class LocalPool:
    """Runs task payloads on ``max_workers`` local processes.

    ``submit`` only queues; the manager thread starts workers, hands each idle worker one task, reads
    outcomes and resolves futures. A task is marked running only when an idle worker receives it, so every
    task still in the queue can be cancelled (the stdlib pool pre-sends one more, which then cannot).
    """

    ships_code = False  # workers get this process's sys.path, so modules travel by reference
    run_dir: Optional[RunDir] = None  # no run directory: payloads and outcomes travel over pipes

    def __init__(self, max_workers: Optional[int], initializer: Optional[Callable[..., Any]] = None,
                 initargs: tuple = (), forward_output: bool = True,
                 max_tasks_per_child: Optional[int] = None) -> None:
        """``forward_output=False``: the workers' stdout and stderr go to /dev/null, not this process's.
        ``initializer(*initargs)`` runs in each worker before its first task; the initargs may hold
        multiprocessing objects (:mod:`clustrix_futures.local.handover`: ``TypeError`` if they cannot be handed
        over). ``max_tasks_per_child``: a worker ends after that many tasks, and a fresh one takes its place."""
        self.max_workers = max_workers or os.cpu_count() or 1
        self._start = Start(initializer, initargs, forward_output)
        self._max_tasks = max_tasks_per_child
        self._lock = threading.Lock()
        self._pending: deque[Entry] = deque()
        self._wake_reader, self._wake_writer = _pipe()
        self._wake_sent = False
        self._workers: dict[Connection, Worker] = {}
        self._retired: list[Worker] = []  # retired (max_tasks_per_child), not yet reaped
        self._closing = False
        self._broken: Optional[str] = None
        self._startup_failures = 0
        self._ids = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._held = Held()  # parts of running chunks whose futures do not stream (manager thread only)
        self.futures: list[ClusterFuture] = []  # only an attached run has futures from the start; never local
        _live_pools.add(self)

    # ------------------------------------------------------------ called by the executor

    def submit(self, payload: bytes, resources: Optional[Mapping[str, Any]] = None,
               packable: bool = True) -> ClusterFuture:
        future: ClusterFuture[Any] = ClusterFuture(next(self._ids))
        if not packable:
            future._stream()  # a map chunk: its items may come in parts while it runs
        with self._lock:
            if self._broken:
                raise ExecutorBrokenError(self._broken)
            if self._closing or _exiting:
                raise RuntimeError("cannot schedule new futures after "
                                   + ("interpreter shutdown" if _exiting else "shutdown"))
            self._pending.append((future, payload))
            if self._thread is None:
                self._thread = threading.Thread(target=self._manage, name="clustrix-futures-local",
                                                daemon=True)
                self._thread.start()
            self._wake()
        return future

    def chunk_sizes(self, total: Optional[int], fn: Callable[..., Any]) -> Iterator[int]:
        """Chunks that balance load over the workers (:func:`~clustrix_futures.mapping.sizing.local_sizes`)."""
        return local_sizes(total, self.max_workers)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closing = True
            cancelled = list(self._pending) if cancel_futures else []
            if cancel_futures:
                self._pending.clear()
            self._wake()
            thread = self._thread
        for future, _ in cancelled:
            future.cancel()
        if wait and thread is not None:
            try:
                thread.join()
            except BaseException:  # interrupted (a second Ctrl-C): no worker may outlive us
                self._break("the local pool was interrupted while shutting down; its workers were killed")
                thread.join(10)
                raise

    def files(self) -> RemoteFiles:
        """Filesystem helpers on this machine, whose files the workers see."""
        return local_files()

    def job_script(self, resources: Optional[Mapping[str, Any]]) -> NoReturn:
        raise ConfigError("job_script() shows what a scheduler backend would submit; the"
                          " local backend submits no jobs")

    @property
    def command_counts(self) -> dict[str, int]:
        """Always empty: no scheduler runs."""
        return {}

    # ------------------------------------------------------------ the manager thread

    def _wake(self) -> None:
        if not self._wake_sent:
            self._wake_sent = True
            self._wake_writer.send_bytes(b"")

    def _manage(self) -> None:
        """Start, dispatch, then decide whether to end, then wait. The decision comes after the dispatch, which
        may drop cancelled tasks: decided before it, a shutdown whose wake-up was coalesced with the one
        already drained would leave the loop waiting with nothing left to wake it."""
        try:
            while True:
                with self._lock:
                    self._wake_sent = False
                    self._drop_cancelled()
                self._start_workers()
                self._dispatch()
                with self._lock:
                    done = self._closing and not self._pending and self._idle()
                if done or self._broken:
                    break
                self._serve()
        except BaseException as exc:
            log.exception("the local pool's manager thread failed")
            self._break(f"the local pool's manager thread failed: {exc!r}")
        finally:
            self._retired.extend(self._workers.values())
            self._workers.clear()
            for worker in self._retired:
                worker.close()
            for worker in self._retired:
                worker.process.wait()

    def _drop_cancelled(self) -> None:
        """Drop the cancelled tasks at the head of the queue, so no worker is started for them."""
        while self._pending and self._pending[0][0].cancelled():
            self._pending.popleft()

    def _serve(self) -> None:
        """Wait for a wake-up, a message or a worker's exit, and handle what came."""
        sentinels = [worker.sentinel for worker in self._workers.values()]
        timeout = None if None not in sentinels else 1.0
        for ready in wait([self._wake_reader, *self._workers, *(s for s in sentinels if s is not None)], timeout):
            if ready is self._wake_reader:
                while self._wake_reader.poll():
                    self._wake_reader.recv_bytes()
            elif isinstance(ready, Connection) and ready in self._workers:
                self._receive(self._workers[ready])
        for worker in list(self._workers.values()):
            if worker.process.poll() is not None:  # exited: its socket may live on in a child it forked
                self._receive(worker)  # what it sent before it died, or the EOF
                if worker.conn in self._workers:
                    self._on_death(worker)
        self._retired = [worker for worker in self._retired if worker.process.poll() is None]

    def _idle(self) -> bool:
        return all(worker.running is None for worker in self._workers.values())

    def _start_workers(self) -> None:
        """Start workers for the tasks waiting that no idle (or starting) worker will take, up to ``max_workers``."""
        busy = sum(worker.running is not None for worker in self._workers.values())
        wanted = min(self.max_workers, busy + len(self._pending))
        while len(self._workers) < wanted:
            worker = Worker(self._start)
            self._workers[worker.conn] = worker

    def _dispatch(self) -> None:
        for worker in self._workers.values():
            if worker.running is None and not self._dispatch_to(worker):
                return

    def _dispatch_to(self, worker: Worker) -> bool:
        """Give an idle worker the next task still wanted; False when there is none."""
        worker.running = self._next_runnable()
        if worker.running is None:
            return False
        worker.conn.send_bytes(worker.running[1])
        return True

    def _next_runnable(self) -> Optional[Entry]:
        with self._lock:
            while self._pending:
                future, payload = self._pending.popleft()
                if future.set_running_or_notify_cancel():
                    return future, payload
        return None

    def _receive(self, worker: Worker) -> None:
        try:
            while worker.conn in self._workers and worker.conn.poll():
                data = worker.conn.recv_bytes()
                if data[:1] == LOG:
                    logs.handle(data[1:])
                elif not worker.ready:
                    self._on_ready(worker, data)
                elif worker.running is not None and not self._on_part(worker.running[0], data):
                    self._on_outcome(worker, data)
        except (EOFError, OSError):
            self._on_death(worker)

    def _on_outcome(self, worker: Worker, data: bytes) -> None:
        assert worker.running is not None
        future, worker.running = worker.running[0], None
        worker.done += 1
        if self._max_tasks is not None and worker.done >= self._max_tasks:
            self._retire(worker)
        else:
            self._dispatch_to(worker)  # before unpickling, so the worker does not wait on us
        resolve(future, self._final_outcome(future, data))

    def _retire(self, worker: Worker) -> None:
        """End a worker that has run ``max_tasks_per_child`` tasks: closing its connection ends it (it is reaped
        later); a fresh worker replaces it when there is work."""
        del self._workers[worker.conn]
        worker.close()
        self._retired.append(worker)

    def _on_part(self, future: ClusterFuture, data: bytes) -> bool:
        """A message from a worker running a map chunk that is a part of it (items that finished while it runs):
        to the chunk's future, or kept until its outcome (:class:`~clustrix_futures.runfiles.parts.Held`)."""
        part = Part.from_message(data)
        if part is None:
            return False
        self._held.part(future.task_id, future, part)
        return True

    def _final_outcome(self, future: ClusterFuture, data: bytes) -> Outcome:
        """A task's outcome, whole again with the parts kept of it (a chunk whose future does not stream)."""
        return self._held.outcome(future.task_id, loads_outcome(data))

    def _on_ready(self, worker: Worker, data: bytes) -> None:
        if data.startswith(worker_module.INIT_FAILED):
            self._break("the initializer raised in a worker process:\n" + data[1:].decode(errors="replace"))
            return
        worker.ready = True
        self._startup_failures = 0

    def _on_death(self, worker: Worker) -> None:
        if self._workers.pop(worker.conn, None) is None:
            return
        worker.close()
        how = worker.describe_death()
        if worker.running is not None and worker.ready:
            worker.running[0].set_exception_if_pending(JobFailedError(
                f"the worker process running this task died: {how}", state="WORKER_DIED",
                job_id=str(worker.process.pid)))
        elif worker.running is not None:  # it died before it could start anything: not the task's fault
            with self._lock:
                self._pending.appendleft(worker.running)
        log.warning("%s; starting a replacement", how)
        if not worker.ready:
            self._startup_failures += 1
            if self._startup_failures >= _STARTUP_FAILURES_TOLERATED:
                self._break(f"worker processes die as they start ({how}); is {sys.executable} usable?")

    def _break(self, reason: str) -> None:
        with self._lock:
            self._broken = reason
            entries: list[Entry] = list(self._pending)
            self._pending.clear()
        for worker in list(self._workers.values()):
            if worker.running is not None:
                entries.append(worker.running)
                worker.running = None
            worker.process.kill()
        for future, _ in entries:
            future.set_exception_if_pending(ExecutorBrokenError(reason))


def _pipe() -> tuple[Connection, Connection]:
    import multiprocessing

    return multiprocessing.Pipe(duplex=False)


_live_pools: weakref.WeakSet[LocalPool] = weakref.WeakSet()
_exiting = False  # the interpreter has begun exiting: submit raises, as in the stdlib's pools


def _finish_at_exit() -> None:
    """At interpreter exit, let every pool finish its queued work, as the stdlib's pools do."""
    global _exiting
    _exiting = True
    for pool in list(_live_pools):
        pool.shutdown(wait=True)


try:
    threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - Python < 3.9 has no such hook
    import atexit

    atexit.register(_finish_at_exit)
