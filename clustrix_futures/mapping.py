"""``Executor.map`` over chunks, with the stdlib's contract and per-item failure semantics.

Items travel in chunks (one task per chunk), but results come back per item: every item before a failing
one is yielded, then that item's exception is raised. ``timeout`` counts from the ``map`` call. Closing the
iterator cancels chunks not started.

When chunks are submitted:

* with ``buffersize``, at most ``buffersize`` input items are read ahead of the consumer;
* otherwise every chunk is submitted without waiting for the consumer, as the stdlib does: at once when the
  chunk sizes are known up front, or — for :class:`~clustrix_futures.chunking.AdaptiveSizes` that have not
  yet learned the function's item duration — one probe chunk at once, then the rest from a *feeder* thread
  as soon as the probe's duration is known. :class:`Feeders` lets the executor's ``shutdown`` wait for, or
  stop, feeders still submitting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Callable, Optional, Union

from clustrix_futures.bars import Bar
from clustrix_futures.chunking import AdaptiveSizes, length_of, split
from clustrix_futures.future import ClusterFuture
from clustrix_futures.serialization import dumps_task, unpack_items
from clustrix_futures.worker import apply_chunk

SubmitPayload = Callable[[bytes], ClusterFuture]
PROBE_POLL = 0.05


class Feeders:
    """The feeder threads of one executor's maps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: set[_MapRun] = set()

    def add(self, run: _MapRun) -> None:
        with self._lock:
            self._runs.add(run)

    def discard(self, run: _MapRun) -> None:
        with self._lock:
            self._runs.discard(run)

    def active(self) -> list[_MapRun]:
        with self._lock:
            return list(self._runs)

    def join(self) -> None:
        for run in self.active():
            run.join()

    def stop(self) -> None:
        """Submit nothing more (``shutdown(cancel_futures=True)``)."""
        for run in self.active():
            run.stopped = True


class _MapRun:
    """The chunk futures of one ``map`` call, in input order."""

    def __init__(self, submit_part: Callable[[Any], tuple[ClusterFuture, int]], parts: Iterator[Any],
                 sizes: Iterator[int], feeders: Feeders) -> None:
        self.submit_part = submit_part
        self.parts = parts
        self.sizes = sizes
        self.feeders = feeders
        # entries: (future, item count), or (exception raised while reading the input, 0)
        self.pending: deque[tuple[Union[ClusterFuture, BaseException], int]] = deque()
        self.condition = threading.Condition()
        self.fed_all = False
        self.stopped = False
        self.thread: Optional[threading.Thread] = None
        self.probe: Optional[ClusterFuture] = None  # measured by the feeder, not again by the consumer

    def submit_next(self) -> bool:
        """Read and submit one more chunk; False at the end of the input."""
        part = next(self.parts, None)
        if part is None:
            return False
        entry = self.submit_part(part)
        with self.condition:
            self.pending.append(entry)
            self.condition.notify_all()
        return True

    def start_feeder(self, probe: ClusterFuture) -> None:
        self.probe = probe
        self.feeders.add(self)
        self.thread = threading.Thread(target=self._feed, args=(probe,), name="clustrix-futures-map-feeder",
                                       daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def _feed(self, probe: ClusterFuture) -> None:
        try:
            self._learn_from(probe)
            while not self.stopped and self.submit_next():
                pass
        except BaseException as exc:  # reading the input failed: raise it where the consumer reaches it
            with self.condition:
                self.pending.append((exc, 0))
        finally:
            with self.condition:
                self.fed_all = True
                self.condition.notify_all()
            self.feeders.discard(self)

    def _learn_from(self, probe: ClusterFuture) -> None:
        """Wait for the probe chunk's duration; a probe still running after the target time gives a lower
        bound, which is enough (queue time does not count: the clock starts when it runs)."""
        sizes = self.sizes
        assert isinstance(sizes, AdaptiveSizes)
        count = sizes.probe()
        running_since: Optional[float] = None
        while not self.stopped:
            if probe.done():
                if not probe.cancelled() and probe.exception() is None:
                    sizes.observe(count, probe.result().seconds)
                if not sizes.learned:
                    sizes.observe(count, 0.0)  # the probe failed: nothing measured, size as if instant
                return
            if probe.running():
                running_since = running_since or time.monotonic()
                if time.monotonic() - running_since >= sizes.target:
                    sizes.observe(count, time.monotonic() - running_since)
                    return
            time.sleep(PROBE_POLL)


def map_in_chunks(
    submit: SubmitPayload,
    fn: Callable[..., Any],
    iterables: Sequence[Iterable[Any]],
    sizes: Iterator[int],
    timeout: Optional[float],
    buffersize: Optional[int],
    ship_code: bool,
    feeders: Feeders,
    progress: bool = False,
) -> Iterator[Any]:
    if buffersize is not None and (isinstance(buffersize, bool) or not isinstance(buffersize, int)
                                   or buffersize < 1):
        raise ValueError("buffersize must be None or an integer greater than 0")
    deadline = None if timeout is None else time.monotonic() + timeout
    star = len(iterables) != 1
    source = iterables[0] if not star else zip(*iterables)
    dumps_task(fn, (), {}, ship_code)  # an unpicklable function fails here, in map(), not in the iterator
    room = [buffersize or 0]
    adaptive = sizes if isinstance(sizes, AdaptiveSizes) else None

    def bounded() -> Iterator[int]:
        for size in sizes:
            yield min(size, room[0]) if buffersize else size

    def submit_part(part: Any) -> tuple[ClusterFuture, int]:
        return submit(dumps_task(apply_chunk, (fn, part, star), {}, ship_code)), len(part)

    run = _MapRun(submit_part, split(source, bounded()), sizes, feeders)

    def fill() -> None:
        while room[0] > 0 and run.submit_next():
            room[0] -= run.pending[-1][1]

    if buffersize:
        fill()
    elif adaptive is not None and not adaptive.learned:
        if run.submit_next():
            probe = run.pending[0][0]
            assert isinstance(probe, ClusterFuture)
            run.start_feeder(probe)
        else:
            run.fed_all = True
    else:
        while run.submit_next():
            pass
    if run.thread is None:
        run.fed_all = True

    def remaining() -> Optional[float]:
        return None if deadline is None else deadline - time.monotonic()

    bar = Bar(length_of(iterables[0]) if not star else None, "item", getattr(fn, "__name__", None)) \
        if progress else None

    def results() -> Iterator[Any]:
        try:
            while True:
                with run.condition:
                    while not run.pending and not run.fed_all:
                        left = remaining()
                        if left is not None and left <= 0:
                            raise FuturesTimeoutError()
                        run.condition.wait(left)
                    if not run.pending:
                        return
                    head, count = run.pending[0]
                if isinstance(head, BaseException):
                    raise head
                chunk = head.result(remaining())
                with run.condition:
                    run.pending.popleft()
                if adaptive is not None and head is not run.probe:
                    adaptive.observe(count, chunk.seconds)
                if bar is None:
                    yield from unpack_items(chunk)
                else:
                    for item in unpack_items(chunk):
                        yield item
                        bar.advance(1, [e for e, _ in run.pending if isinstance(e, ClusterFuture)])
                if buffersize:
                    room[0] += count
                    fill()
        finally:
            if bar is not None:
                bar.close()
            run.stopped = True
            with run.condition:
                for entry, _ in run.pending:
                    if isinstance(entry, ClusterFuture):
                        entry.cancel()

    return results()
