"""The future every submission returns: a :class:`concurrent.futures.Future` that cancels cleanly.

The stdlib ``Future.cancel()`` only wakes ``wait()`` and ``as_completed()`` once the executor later calls
``set_running_or_notify_cancel()``; a task deep in a queue (or in a scheduler's queue) would keep its waiters
asleep until then. :class:`ClusterFuture` notifies waiters in ``cancel()`` itself, atomically, and tells its
executor so a queued scheduler job can be withdrawn.

:func:`someone_waits` tells whether any thread of this process is blocked on a ClusterFuture, in
``result()``, ``exception()``, ``concurrent.futures.wait`` or ``as_completed`` (these install waiters on the
future): the job monitor then looks for results more often (:mod:`clustrix_futures.engine.monitor`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures._base import (  # the states are stable since Python 3.2
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import Any, Generic, Optional, TypeVar

from clustrix_futures.errors import JobFailedError

T = TypeVar("T")
OutputReader = Callable[[str, int], Optional[str]]  # (stream "out" or "err", max bytes) -> the task's output
OUTPUT_BYTES = 1 << 20  # what stdout() and stderr() return at most, by default: the end of the task's output

_waiting = 0  # threads blocked in result()/exception(), plus waiters installed by wait()/as_completed()
_waiting_lock = threading.Lock()


def someone_waits() -> bool:
    """Whether a thread of this process is waiting for some ClusterFuture to finish."""
    return _waiting > 0


def _count_waiting(change: int) -> None:
    global _waiting
    with _waiting_lock:
        _waiting += change


@contextlib.contextmanager
def _counted_waiter() -> Iterator[None]:
    _count_waiting(1)
    try:
        yield
    finally:
        _count_waiting(-1)


class _Waiters(list):
    """A future's waiter list (stdlib internals since Python 3.2) that counts what waits in it."""

    def append(self, waiter: Any) -> None:
        super().append(waiter)
        _count_waiting(1)

    def remove(self, waiter: Any) -> None:
        super().remove(waiter)
        _count_waiting(-1)


def _wake_part_waiters(future: Future[Any]) -> None:
    assert isinstance(future, ClusterFuture)
    with future._parts_ready:
        future._parts_ready.notify_all()


class ClusterFuture(Future[T], Generic[T]):
    """A ``concurrent.futures.Future`` whose ``cancel()`` wakes waiters at once; generic in its result type
    (``ex.submit(fn)`` of a ``fn`` returning ``int`` is a ``ClusterFuture[int]`` to a type checker).

    Every ``submit`` returns one (``map`` uses them too, one per chunk). It is a real
    ``concurrent.futures.Future``: ``result``, ``exception``, ``done``, ``running``, ``cancelled``,
    ``add_done_callback``, ``concurrent.futures.wait`` and ``as_completed`` behave as the stdlib documents.
    Its exception is the task's own exception (with the remote traceback as ``__cause__``), or a
    ``ClusterFuturesError`` when the machinery failed.

    ``task_id`` numbers the submission within its executor, from 0 in submission order (the ``TASK`` of
    ``clustrix-futures logs RUN_DIR TASK``); -1 for a future made outside an executor. On a cluster,
    :attr:`job_id` and :attr:`job_state` tell where its array element stands, and :meth:`stdout` /
    :meth:`stderr` read what the task printed.

    Futures are made by executors; the ``set_*`` methods are for executors (and tests), as in the stdlib.
    """

    def __init__(self, task_id: int = -1, on_cancel: Optional[Callable[[ClusterFuture[Any]], None]] = None) -> None:
        super().__init__()
        self.task_id = task_id
        self._on_cancel = on_cancel
        self._waiters = _Waiters()
        # set by the cluster engine's monitor (one writer; a reader sees one value or the next)
        self._job_id: Optional[str] = None
        self._phase: Optional[str] = None  # queued | running, from the monitor's last cycle; None: local
        self._slot: Optional[tuple[int, int]] = None  # (batch, index) of its element
        self._read_output: Optional[OutputReader] = None
        self._parts: Optional[deque[Any]] = None  # a streamed map chunk's parts not yet taken (_stream)
        self._parts_ready: Any = None  # their condition (_stream): made only for a map chunk
        self._reported = 0  # items of the chunk reported so far, in parts
        self._eager = False  # its map takes items as they come: the engine reads them while the chunk runs
        self._consumer_gone = False

    @property
    def job_id(self) -> Optional[str]:
        """The scheduler's id of the array element running this task, as its queue shows it (``123_4`` for
        SLURM); None on the local and debug backends, and until the element is submitted. The latest attempt's
        if the element was run again."""
        return self._job_id

    @property
    def job_state(self) -> Optional[str]:
        """Where the task stands, in the words of ``clustrix-futures status``: ``queued`` (also while not yet
        submitted) and ``running`` as of the job monitor's last cycle, then ``succeeded``, ``raised`` (the task's
        own exception), ``failed`` (its element ended without its result: a :class:`JobFailedError`) or
        ``cancelled``. None on the local and debug backends."""
        if self._phase is None:
            return None
        if not self.done():
            return self._phase
        if self.cancelled():
            return "cancelled"
        error = super().exception()
        return "succeeded" if error is None else "failed" if isinstance(error, JobFailedError) else "raised"

    def stdout(self, max_bytes: int = OUTPUT_BYTES) -> Optional[str]:
        """What the task printed to stdout so far (the end of it, at most ``max_bytes``), read from its element's
        log on the cluster, without the other tasks' output packed in the same element. None where output is
        not captured (local and debug backends: it goes to this process's stdout) and on Kubernetes; "" before
        the task starts."""
        return None if self._read_output is None else self._read_output("out", max_bytes)

    def stderr(self, max_bytes: int = OUTPUT_BYTES) -> Optional[str]:
        """As :meth:`stdout`, for stderr."""
        return None if self._read_output is None else self._read_output("err", max_bytes)

    def result(self, timeout: Optional[float] = None) -> T:
        """Return the result of the call that the future represents.

        Args:
            timeout: The number of seconds to wait for the result; None waits without limit.

        Returns:
            The result of the call that the future represents.

        Raises:
            CancelledError: If the future was cancelled.
            TimeoutError: If the future didn't finish executing before the given timeout.
            Exception: If the call raised then that exception will be raised (or, when the machinery
                failed, a ``ClusterFuturesError`` such as ``JobFailedError``).
        """
        if self.done():
            return super().result()
        with _counted_waiter():
            return super().result(timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """Return the exception raised by the call that the future represents.

        Args:
            timeout: The number of seconds to wait for the exception; None waits without limit.

        Returns:
            The exception raised by the call that the future represents, or None if the call completed
                without raising.

        Raises:
            CancelledError: If the future was cancelled.
            TimeoutError: If the future didn't finish executing before the given timeout.
        """
        if self.done():
            return super().exception()
        with _counted_waiter():
            return super().exception(timeout)

    def cancel(self) -> bool:
        """Cancel the future if possible.

        As ``Future.cancel``, but waiters (``result``, ``wait``, ``as_completed``) wake now, not when the
        executor later reaches the task, and the executor is told (``on_cancel``): on a scheduler backend a
        queued array element whose tasks are all cancelled is withdrawn (``scancel``, ``qdel``...).

        Returns:
            True if the future was cancelled (now or before), False if it is running or done.
        """
        with self._condition:
            if self._state in (RUNNING, FINISHED):
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        if self._on_cancel is not None:
            self._on_cancel(self)
        return True

    def set_running_or_notify_cancel(self) -> bool:
        """Mark the future running; False if it was cancelled (never raises for a cancelled future)."""
        with self._condition:
            if self._state == PENDING:
                self._state = RUNNING
                return True
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return False
        return super().set_running_or_notify_cancel()

    def set_result_if_pending(self, result: Any) -> None:
        """Resolve unless it was already resolved or cancelled (a result may arrive twice, or late)."""
        if self._claim():
            self.set_result(result)

    def set_exception_if_pending(self, exception: BaseException) -> None:
        """Fail unless it was already resolved or cancelled (an outcome may arrive twice, or late)."""
        if self._claim():
            self.set_exception(exception)

    def _claim(self) -> bool:
        """Whether this caller may resolve the future: it is still pending or running (then it is running)."""
        with self._condition:
            if self._state not in (PENDING, RUNNING):
                return False
            self._state = RUNNING
            return True

    # ------------------------------------------------------------ a map chunk's items as they finish

    def _stream(self) -> None:
        """Set by the engine as it makes a map chunk's future: its items come in parts as they finish
        (:meth:`_add_part`), and its result holds only the items after them (``ChunkResult.first``). Parts have
        a condition of their own: waking the future's would end a ``result(timeout)`` early."""
        self._parts_ready = threading.Condition()
        self._parts = deque()
        self.add_done_callback(_wake_part_waiters)

    def _streams(self) -> bool:
        """Whether someone takes this chunk's items as they come (a ``map`` with the default chunksize, still
        consumed, set ``_eager``) and it is not done: the engine then reads them while the chunk runs."""
        return self._eager and self._parts is not None and not self._consumer_gone and not self.done()

    def _add_part(self, part: Any) -> bool:
        """An engine's report of finished items of the chunk (a :class:`~clustrix_futures.runfiles.parts.Part`,
        with ``first`` and ``count``); wakes whoever waits for them. Items already reported are not taken again
        (an element run again reports from item 0). False if this future does not stream."""
        if self._parts is None:
            return False
        with self._parts_ready:
            if part.first <= self._reported < part.first + part.count and not self._consumer_gone:
                self._parts.append(part)
                self._reported = part.first + part.count
                self._parts_ready.notify_all()
        return True

    def _next_part(self, deadline: Optional[float]) -> Optional[Any]:
        """The oldest part not yet taken, once there is one; None once the future is done and every part was
        taken. ``TimeoutError`` at ``deadline`` (``time.monotonic()``; None: no limit)."""
        with self._parts_ready:
            assert self._parts is not None
            if not self._parts and not self.done():
                with _counted_waiter():
                    while not self._parts and not self.done():
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise FuturesTimeoutError()
                        self._parts_ready.wait(left)
            return self._parts.popleft() if self._parts else None

    def _drop_parts(self) -> None:
        """The map's consumer is gone: keep no part, take none."""
        self._consumer_gone = True
        if self._parts is not None:
            with self._parts_ready:
                self._parts.clear()

    def _started(self, phase: str) -> None:
        """Set by the job monitor when the task's element runs: running, unless it was cancelled (a task taken
        back from a cold burst's element is running already, and stays so; a task of the element that finished
        before the report that shows it running stays finished)."""
        self._phase = phase
        with self._condition:
            if self._state != PENDING:
                return
        self.set_running_or_notify_cancel()

    def _watched(self, job_id: str, slot: tuple[int, int], phase: str) -> None:
        """Set by the job monitor: the task's element (its scheduler id and run-directory slot) and its phase."""
        self._job_id, self._slot, self._phase = job_id, slot, phase
