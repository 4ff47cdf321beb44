"""The chunk queue one ``map`` call shares between its consumer, its feeder thread and done-callbacks.

:class:`MapRun` holds the chunk futures of one map in input order (``pending``), under one condition variable.
Three kinds of thread touch it: the consumer (the map's iterator, :mod:`clustrix_futures.mapping.run`), an
optional *feeder* thread, and the done-callbacks of guessed chunks (run by whichever thread resolves them).

The feeder thread, when there is one, does two things the consumer must not wait for:

* after a probe chunk, it waits for the probe's duration (:meth:`MapRun._learn_from`), then reads and submits
  the rest of the input;
* it settles guessed chunks as they finish (:meth:`MapRun.settle`): it records each one's measured rate and
  submits the items its time budget cut off, at once rather than when the consumer reaches it. The consumer
  settles a guessed chunk itself if it gets there first; whichever comes first does the work, once.

:class:`Feeders` lets the executor's ``shutdown`` wait for, or stop, the feeders still submitting.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Optional, Union

from clustrix_futures.future import ClusterFuture
from clustrix_futures.mapping.chunks import split
from clustrix_futures.mapping.sizing import AdaptiveSizes

# Submits one chunk, with a time budget (guessed chunks) or None; the chunk's future and its item count.
SubmitPart = Callable[[Any, Optional[float]], tuple[ClusterFuture, int]]
# A pending entry: (future, item count), or (the exception raised while reading the input, 0)
Entry = tuple[Union[ClusterFuture, BaseException], int]
PROBE_POLL = 0.05
STOP_POLL = 0.25  # how often a feeder waiting for guessed chunks looks whether its map was stopped


class Feeders:
    """The maps of one executor whose feeder threads are still running. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: set[MapRun] = set()

    def add(self, run: MapRun) -> None:
        with self._lock:
            self._runs.add(run)

    def discard(self, run: MapRun) -> None:
        with self._lock:
            self._runs.discard(run)

    def active(self) -> list[MapRun]:
        with self._lock:
            return list(self._runs)

    def join(self) -> None:
        """Wait until every feeder has submitted all its chunks (or stopped)."""
        for run in self.active():
            run.join()

    def stop(self) -> None:
        """Submit nothing more (``shutdown(cancel_futures=True)``)."""
        for run in self.active():
            run.stopped = True


def _cancelled() -> ClusterFuture:
    future: ClusterFuture[Any] = ClusterFuture()
    future.cancel()
    return future


class MapRun:
    """The chunk futures of one ``map`` call, in input order, and its feeder thread.

    ``pending``, ``guessed``, ``rests`` and ``fed_all`` are guarded by ``condition`` (notified when an entry is
    appended and when feeding ends). ``stopped`` is a flag any thread may set: nothing more is submitted.
    ``finished_guesses`` receives guessed chunks as they finish, for the feeder; it is None without one, so
    that nothing holds finished futures the consumer has already dropped.
    """

    def __init__(self, submit_part: SubmitPart, parts: Iterator[Any], sizes: Iterator[int],
                 feeders: Feeders) -> None:
        self.submit_part = submit_part
        self.parts = parts
        self.adaptive = sizes if isinstance(sizes, AdaptiveSizes) else None
        self.feeders = feeders
        self.pending: deque[Entry] = deque()
        self.condition = threading.Condition()
        self.fed_all = False
        self.stopped = False
        self.thread: Optional[threading.Thread] = None
        self.probe: Optional[ClusterFuture] = None  # the rest of the input waits for its duration
        self.probe_measured = False  # a lower bound was taken while it ran: do not count it again
        self.guessed: dict[ClusterFuture, Any] = {}  # chunks sized before the rate was known: their parts
        # settled guesses the consumer has not reached: the entries that take their cut-off items' place
        self.rests: dict[ClusterFuture, list[tuple[ClusterFuture, int]]] = {}
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
            rest = self._cut_off(future, self.guessed[future])
            del self.guessed[future]  # only now: if a submission raised, the consumer settles it again
            if not reached:
                self.rests[future] = rest
            return rest

    def _cut_off(self, future: ClusterFuture, part: Any) -> list[tuple[ClusterFuture, int]]:
        """Record the rate of the finished guessed chunk ``future`` (of ``part``); entries for the items its
        budget cut off: submitted, or cancelled once the map is stopped. Called under ``condition``."""
        if future.cancelled() or future.exception() is not None:
            return []
        chunk = future.result()
        ran = len(part) if chunk.stopped_at is None else chunk.stopped_at
        assert self.adaptive is not None
        if not (future is self.probe and self.probe_measured):
            self.adaptive.observe(ran, chunk.seconds)
        if ran >= len(part):
            return []
        if self.stopped:  # shut down meanwhile: the cut-off items are cancelled
            return [(_cancelled(), len(part) - ran)]
        sizes = itertools.repeat(self.adaptive.learned_size())
        return [self.submit_part(piece, None) for piece in split(part[ran:], sizes)]

    def close(self) -> None:
        """The consumer is gone: submit nothing more, and cancel every chunk it has not taken."""
        self.stopped = True
        with self.condition:
            for entry, _ in itertools.chain(self.pending, *self.rests.values()):
                if isinstance(entry, ClusterFuture):
                    entry.cancel()
                    entry._drop_parts()  # nobody takes its items now: keep none, read none as it runs

    def start_feeder(self, probe: Optional[ClusterFuture]) -> None:
        """Start the feeder thread: with a ``probe``, it submits the rest of the input once the probe's duration
        is known; in every case it then settles the guessed chunks as they finish."""
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
