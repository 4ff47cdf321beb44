"""``Executor.map`` over chunks, with the stdlib's contract and per-item failure semantics.

Items travel in chunks (one task per chunk), but results come back per item: every item before a failing
one is yielded, then that item's exception is raised. ``timeout`` counts from the ``map`` call. Closing the
iterator cancels chunks not started.

When chunks are submitted:

* with ``buffersize``, at most ``buffersize`` input items are read ahead of the consumer;
* otherwise every chunk is submitted without waiting for the consumer, as the stdlib does: at once when the
  chunk sizes are known up front, and also for :class:`~clustrix_futures.mapping.sizing.AdaptiveSizes` that have
  not yet learned the function's item duration when the input's length is known (cap-sized *guessed*
  chunks covering the whole input, one array); with an unknown (or a very large) length, one probe chunk at
  once, then the rest from a *feeder* thread as soon as the probe's duration is known.

A guessed chunk (sized before the duration was known) runs under a time budget of the target element
duration: the worker stops it there and reports how many items ran. Settling it (:meth:`_MapRun.settle`)
records its measured rate and submits the items it did not reach, in chunks sized from that rate; their
futures take the cut-off items' place in the map's order. A feeder thread settles guessed chunks as they
finish; the consumer settles a guessed chunk itself if it gets there first. :class:`Feeders` lets the
executor's ``shutdown`` wait for, or stop, feeders still submitting.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Callable, Optional, Union, cast

from clustrix_futures.future import ClusterFuture
from clustrix_futures.mapping.chunks import length_of, split
from clustrix_futures.mapping.sizing import AdaptiveSizes
from clustrix_futures.node.calls import apply_chunk
from clustrix_futures.progressbar import Bar
from clustrix_futures.runfiles.outcomes import unpack_items
from clustrix_futures.serialization import dumps_task

SubmitPayload = Callable[[bytes], ClusterFuture]
PROBE_POLL = 0.05
STOP_POLL = 0.25  # how often a feeder waiting for guessed chunks looks whether its map was stopped


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


def _cancelled() -> ClusterFuture:
    future = ClusterFuture()
    future.cancel()
    return future


class _MapRun:
    """The chunk futures of one ``map`` call, in input order."""

    def __init__(self, submit_part: Callable[[Any, Optional[float]], tuple[ClusterFuture, int]],
                 parts: Iterator[Any], sizes: Iterator[int], feeders: Feeders) -> None:
        self.submit_part = submit_part
        self.parts = parts
        self.sizes = sizes
        self.adaptive = sizes if isinstance(sizes, AdaptiveSizes) else None
        self.feeders = feeders
        # entries: (future, item count), or (exception raised while reading the input, 0)
        self.pending: deque[tuple[Union[ClusterFuture, BaseException], int]] = deque()
        self.condition = threading.Condition()
        self.fed_all = False
        self.stopped = False
        self.thread: Optional[threading.Thread] = None
        self.probe: Optional[ClusterFuture] = None  # the rest of the input waits for its duration
        self.probe_measured = False  # a lower bound was taken while it ran: do not count it again
        self.guessed: dict[ClusterFuture, Any] = {}  # chunks sized before the rate was known: their parts
        # settled guesses the consumer has not reached: the entries that take their cut-off items' place
        self.rests: dict[ClusterFuture, list[tuple[ClusterFuture, int]]] = {}
        # guessed chunks as they finish, for the feeder (None without one: nothing may hold finished futures)
        self.finished_guesses: Optional[queue.SimpleQueue[ClusterFuture]] = None

    def submit_next(self) -> bool:
        """Read and submit one more chunk; False at the end of the input."""
        part = next(self.parts, None)
        if part is None:
            return False
        guessed = self.adaptive is not None and self.adaptive.guessed
        entry = self.submit_part(part, self.adaptive.target if self.adaptive is not None and guessed else None)
        with self.condition:
            if guessed:
                self.guessed[entry[0]] = part
            self.pending.append(entry)
            self.condition.notify_all()
        if guessed:
            entry[0].add_done_callback(self._guess_finished)
        return True

    def _guess_finished(self, future: Any) -> None:
        finished = self.finished_guesses
        if finished is not None:
            finished.put(future)

    def settle(self, future: ClusterFuture, reached: bool = False) -> list[tuple[ClusterFuture, int]]:
        """Learn from a finished guessed chunk and submit what its budget cut off, sized from the rate
        measured (once, by whichever thread comes first); the entries that take the cut-off items' place.
        ``reached``: the consumer is there, and takes the entries (nothing here keeps the future any more)."""
        with self.condition:
            if future in self.rests:
                return self.rests.pop(future) if reached else []
            if future not in self.guessed:  # settled, and taken by the consumer already
                return []
            part = self.guessed[future]
            rest: list[tuple[ClusterFuture, int]] = []
            if not future.cancelled() and future.exception() is None:
                chunk = future.result()
                ran = len(part) if chunk.stopped_at is None else chunk.stopped_at
                assert self.adaptive is not None
                if not (future is self.probe and self.probe_measured):
                    self.adaptive.observe(ran, chunk.seconds)
                if ran < len(part) and self.stopped:  # shut down meanwhile: the cut-off items are cancelled
                    rest.append((_cancelled(), len(part) - ran))
                elif ran < len(part):
                    for piece in split(part[ran:], itertools.repeat(self.adaptive.learned_size())):
                        rest.append(self.submit_part(piece, None))
            del self.guessed[future]  # only now: if a submission raised, the consumer settles it again
            if not reached:
                self.rests[future] = rest
            return rest

    def start_feeder(self, probe: Optional[ClusterFuture]) -> None:
        self.probe = probe
        self.feeders.add(self)
        self.thread = threading.Thread(target=self._feed, name="clustrix-futures-map-feeder", daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def _feed(self) -> None:
        try:
            if self.probe is not None:
                self._learn_from(self.probe)
                while not self.stopped and self.submit_next():
                    pass
            self._settle_guesses()
        except BaseException as exc:  # reading the input failed: raise it where the consumer reaches it
            with self.condition:
                self.pending.append((exc, 0))
        finally:
            with self.condition:
                self.fed_all = True
                self.condition.notify_all()
            self.feeders.discard(self)

    def _settle_guesses(self) -> None:
        """Settle each guessed chunk as it finishes, so what its budget cut off is submitted at once, not
        when the consumer reaches it."""
        finished = self.finished_guesses
        assert finished is not None
        try:
            while not self.stopped:
                with self.condition:
                    if not self.guessed:
                        return
                try:
                    future = finished.get(timeout=STOP_POLL)
                except queue.Empty:
                    continue
                self.settle(future)
        finally:
            self.finished_guesses = None  # late callbacks put nothing: the queue (and what is in it) goes

    def _learn_from(self, probe: ClusterFuture) -> None:
        """Wait for the probe chunk's duration; a probe still running after the target time gives a lower
        bound, which is enough (queue time does not count: the clock starts when it runs)."""
        sizes = self.adaptive
        assert sizes is not None
        count = sizes.PROBE
        running_since: Optional[float] = None
        while not self.stopped:
            if probe.done():
                self.settle(probe)
                if not sizes.learned:
                    sizes.observe(count, 0.0)  # the probe failed: nothing measured, size as if instant
                return
            if probe.running():
                running_since = running_since or time.monotonic()
                if time.monotonic() - running_since >= sizes.target:
                    self.probe_measured = True
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

    def submit_part(part: Any, budget: Optional[float]) -> tuple[ClusterFuture, int]:
        args = (fn, part, star) if budget is None else (fn, part, star, budget)
        return submit(dumps_task(apply_chunk, args, {}, ship_code)), len(part)

    run = _MapRun(submit_part, split(source, bounded()), sizes, feeders)

    def fill() -> None:
        while room[0] > 0 and run.submit_next():
            room[0] -= run.pending[-1][1]

    if buffersize:
        fill()  # guessed chunks are settled by the consumer as it reaches them
    elif adaptive is not None and not adaptive.learned and not adaptive.guesses_cover:
        run.finished_guesses = queue.SimpleQueue()
        if run.submit_next():  # the probe: the rest waits for its duration
            probe = run.pending[0][0]
            assert isinstance(probe, ClusterFuture)
            run.start_feeder(probe)
    else:
        run.finished_guesses = queue.SimpleQueue() if adaptive is not None and not adaptive.learned else None
        while run.submit_next():
            pass
        if run.guessed:  # the feeder only submits what budgets cut off; the consumer inserts it in order
            run.start_feeder(None)
            run.fed_all = True
        else:
            run.finished_guesses = None
    if run.thread is None:
        run.fed_all = True

    def remaining() -> Optional[float]:
        return None if deadline is None else deadline - time.monotonic()

    bar = Bar(length_of(iterables[0]) if not star else None, "item", getattr(fn, "__name__", None)) \
        if progress else None

    def advancing(items: Iterator[Any], bar: Bar) -> Iterator[Any]:
        for item in items:
            yield item
            bar.advance(1, [e for e, _ in run.pending if isinstance(e, ClusterFuture)])

    def results() -> Generator[Iterable[Any], None, None]:
        """The values of each chunk in turn, as an iterable per chunk."""
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
                    guessed = head in run.guessed or head in run.rests
                rest = run.settle(head, reached=True) if guessed else []
                with run.condition:
                    run.pending.popleft()
                    run.pending.extendleft(reversed(rest))
                if chunk.stopped_at is not None:
                    count = chunk.stopped_at
                if adaptive is not None and not guessed:
                    adaptive.observe(count, chunk.seconds)
                if bar is not None:
                    yield advancing(unpack_items(chunk), bar)
                elif chunk.failures:
                    yield unpack_items(chunk)  # the values before the first failure, then it raises
                else:
                    yield chunk.values
                if buffersize:
                    room[0] += count
                    fill()
        finally:
            if bar is not None:
                bar.close()
            run.stopped = True
            with run.condition:
                for entry, _ in itertools.chain(run.pending, *run.rests.values()):
                    if isinstance(entry, ClusterFuture):
                        entry.cancel()

    return _Items.over(results())


class _Items(itertools.chain[Any]):
    """The map's iterator: the chunks' values in order, at C speed per item (a chain over a generator of one
    iterable per chunk: the generator runs once per chunk, not once per item). ``close()`` closes that
    generator, like closing a generator ``map`` would have returned."""

    _source: Generator[Iterable[Any], None, None]

    @classmethod
    def over(cls, source: Generator[Iterable[Any], None, None]) -> _Items:
        items = cast(_Items, cls.from_iterable(source))
        items._source = source
        return items

    def close(self) -> None:
        self._source.close()
