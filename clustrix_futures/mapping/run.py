"""``Executor.map`` over chunks, with the stdlib's contract and per-item failure semantics.

Items travel in chunks (one task per chunk), but results come back per item: every item before a failing
one is yielded, then that item's exception is raised. ``timeout`` counts from the ``map`` call. Closing the
iterator cancels chunks not started.

With the default chunksize (``stream``), the map *streams*: an item is yielded as soon as it and every item
before it are done, whatever chunk it is in, from the parts its chunk reports while it runs
(:mod:`clustrix_futures.mapping.stream`). With an explicit chunksize, each chunk is yielded once it has ended,
as ``ProcessPoolExecutor`` does. Either way each value is let go as it is yielded.

When chunks are submitted (the feeding strategies of :class:`_ChunkedMap`):

* with ``buffersize``, at most ``buffersize`` input items are read ahead of the consumer;
* otherwise every chunk is submitted without waiting for the consumer, as the stdlib does: at once when the
  chunk sizes are known up front, and also for :class:`~clustrix_futures.mapping.sizing.AdaptiveSizes` that have
  not yet learned the function's item duration when the input's length is known (cap-sized *guessed*
  chunks covering the whole input, one array); with an unknown (or a very large) length, one probe chunk at
  once, then the rest from a *feeder* thread as soon as the probe's duration is known.

A guessed chunk (sized before the duration was known) runs under a time budget of the target element
duration: the worker stops it there and reports how many items ran. Settling it
(:meth:`~clustrix_futures.mapping.feeder.MapRun.settle`) records its measured rate and submits the items it did
not reach, in chunks sized from that rate; their futures take the cut-off items' place in the map's order. A
feeder thread settles guessed chunks as they finish; the consumer settles a guessed chunk itself if it gets
there first. :class:`~clustrix_futures.mapping.feeder.Feeders` lets the executor's ``shutdown`` wait for, or
stop, feeders still submitting.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Optional, cast

from clustrix_futures.future import ClusterFuture
from clustrix_futures.mapping.chunks import split, total_of
from clustrix_futures.mapping.feeder import Feeders, MapRun
from clustrix_futures.mapping.sizing import AdaptiveSizes
from clustrix_futures.mapping.stream import finished_pieces, streamed_parts
from clustrix_futures.node.calls import apply_chunk
from clustrix_futures.progressbar import Bar
from clustrix_futures.serialization import dumps_task

SubmitPayload = Callable[[bytes], ClusterFuture]
ChunkValues = Generator[Iterable[Any], None, None]


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
    stream: bool = False,
) -> Iterator[Any]:
    """``map(fn, *iterables)`` in chunks of ``sizes`` items, each chunk a payload given to ``submit``.

    Raises at once (in ``map``, as the stdlib does) for a bad ``buffersize`` or an ``fn`` that does not pickle;
    chunks start being submitted before this returns. ``ship_code``: the user's own modules travel by value.
    A map with a feeder thread registers it in ``feeders``. ``progress`` shows a bar over the items. ``stream``
    (the default chunksize): items are yielded as they finish, not chunk by chunk.
    """
    if buffersize is not None and (isinstance(buffersize, bool) or not isinstance(buffersize, int)
                                   or buffersize < 1):
        raise ValueError("buffersize must be None or an integer greater than 0")
    deadline = None if timeout is None else time.monotonic() + timeout
    dumps_task(fn, (), {}, ship_code)  # an unpicklable function fails here, in map(), not in the iterator
    mapping = _ChunkedMap(submit, fn, iterables, sizes, buffersize, ship_code, feeders)
    mapping.eager = stream
    mapping.start()
    bar = Bar(total_of(iterables), "item", getattr(fn, "__name__", None)) if progress else None
    return _Items.over(mapping.results(deadline, bar))


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else deadline - time.monotonic()


class _ChunkedMap:
    """One ``map`` call from its consumer's side: the strategy that feeds its chunks, and the generator that
    yields their values in order.

    Only the consumer's thread calls it (after :meth:`start`, from inside :meth:`results`); what it shares with
    the feeder thread and done-callbacks lives in :class:`~clustrix_futures.mapping.feeder.MapRun`.
    """

    def __init__(self, submit: SubmitPayload, fn: Callable[..., Any], iterables: Sequence[Iterable[Any]],
                 sizes: Iterator[int], buffersize: Optional[int], ship_code: bool, feeders: Feeders) -> None:
        self._submit = submit
        self._fn = fn
        self._star = len(iterables) != 1
        self._ship_code = ship_code
        self._buffersize = buffersize
        self._room = buffersize or 0  # items the read-ahead may still submit
        self._adaptive = sizes if isinstance(sizes, AdaptiveSizes) else None
        self.eager = False  # stream: take the chunks' items as they come
        source = zip(*iterables) if self._star else iterables[0]
        self.run = MapRun(self._submit_part, split(source, self._within_room(sizes)), sizes, feeders)

    def _within_room(self, sizes: Iterator[int]) -> Iterator[int]:
        for size in sizes:
            yield min(size, self._room) if self._buffersize else size

    def _submit_part(self, part: Any, budget: Optional[float]) -> tuple[ClusterFuture, int]:
        args = (self._fn, part, self._star) if budget is None else (self._fn, part, self._star, budget)
        future = self._submit(dumps_task(apply_chunk, args, {}, self._ship_code))
        future._eager = self.eager
        return future, len(part)

    # ------------------------------------------------------------ feeding strategies

    def start(self) -> None:
        """Submit the first chunks (or all of them) with the strategy that fits this map."""
        adaptive = self._adaptive
        if self._buffersize:
            self._read_ahead()
        elif adaptive is None or adaptive.learned:
            self._submit_known_sizes()
        elif adaptive.guesses_cover:
            self._submit_covering_guesses()
        else:
            self._probe_then_feed()
        if self.run.thread is None:
            self.run.fed_all = True

    def _read_ahead(self) -> None:
        """Buffered: submit chunks until ``buffersize`` items are out (called again each time the consumer takes
        a chunk). Guessed chunks are settled by the consumer as it reaches them."""
        while self._room > 0 and self.run.submit_next():
            self._room -= self.run.pending[-1][1]

    def _submit_known_sizes(self) -> None:
        """Sizes known up front (fixed, or learned from earlier maps): every chunk at once."""
        while self.run.submit_next():
            pass

    def _submit_covering_guesses(self) -> None:
        """Known length, duration not yet learned: every guessed chunk at once (one array). A feeder thread
        submits what their budgets cut off as they finish; the consumer puts those entries in order."""
        run = self.run
        run.finished_guesses = queue.SimpleQueue()
        while run.submit_next():
            pass
        if run.guessed:
            run.start_feeder(None)
            run.fed_all = True
        else:
            run.finished_guesses = None

    def _probe_then_feed(self) -> None:
        """Unknown or very large length: a probe chunk now; a feeder thread submits the rest once the probe's
        duration is known, then settles the guessed chunks as they finish."""
        run = self.run
        run.finished_guesses = queue.SimpleQueue()
        if run.submit_next():
            probe = run.pending[0][0]
            assert isinstance(probe, ClusterFuture)
            run.start_feeder(probe)

    # ------------------------------------------------------------ the consumer

    def results(self, deadline: Optional[float], bar: Optional[Bar]) -> ChunkValues:
        """The values of each chunk in turn, as an iterable per chunk; raises ``TimeoutError`` at ``deadline``.
        Closing it (or its ending) cancels the chunks not taken."""
        try:
            while True:
                entry = self._next_entry(deadline)
                if entry is None:
                    return
                head, count = entry
                received = 0
                if self.eager and head._parts is not None:
                    for items, size in streamed_parts(head, deadline):
                        received += size
                        yield items if bar is None else self._advancing(items, bar)
                pieces, count = self._take(head, count, deadline, received)
                for items in pieces:
                    yield items if bar is None else self._advancing(items, bar)
                if self._buffersize:
                    self._room += count
                    self._read_ahead()
        finally:
            if bar is not None:
                bar.close(self._left)
            self.run.close()

    def _next_entry(self, deadline: Optional[float]) -> Optional[tuple[ClusterFuture, int]]:
        """The first chunk not taken and its item count, once there is one; None at the end of the input.
        Raises what reading the input raised, where it was raised."""
        run = self.run
        with run.condition:
            while not run.pending and not run.fed_all:
                left = _remaining(deadline)
                if left is not None and left <= 0:
                    raise FuturesTimeoutError()
                run.condition.wait(left)
            if not run.pending:
                return None
            head, count = run.pending[0]
        if isinstance(head, BaseException):
            raise head
        return head, count

    def _take(self, head: ClusterFuture, count: int, deadline: Optional[float],
              received: int) -> tuple[Iterator[Iterator[Any]], int]:
        """Wait for the first chunk and take it from ``pending`` (a guessed one is settled: what its budget cut
        off takes its place); its values after the ``received`` ones already yielded from its parts (those of
        a chunk that did not stream first), piece by piece, and how many items it ran."""
        chunk = head.result(_remaining(deadline))
        run = self.run
        with run.condition:
            guessed = head in run.guessed or head in run.rests
        rest = run.settle(head, reached=True) if guessed else []
        with run.condition:
            run.pending.popleft()
            run.pending.extendleft(reversed(rest))
        if chunk.stopped_at is not None:
            count = chunk.stopped_at
        if self._adaptive is not None and not guessed:
            self._adaptive.observe(count, chunk.seconds)
        return finished_pieces(head, chunk, received), count

    def _advancing(self, items: Iterator[Any], bar: Bar) -> Iterator[Any]:
        for item in items:
            yield item
            bar.advance(1, self._left)

    def _left(self) -> list[tuple[Any, int]]:
        """The chunks not yet taken, for the bar (a copy: the feeder thread may append meanwhile)."""
        return list(self.run.pending)


class _Items(itertools.chain[Any]):
    """The map's iterator: the chunks' values in order, at C speed per item (a chain over a generator of one
    iterable per chunk: the generator runs once per chunk, not once per item). ``close()`` closes that
    generator, like closing a generator ``map`` would have returned."""

    _source: ChunkValues

    @classmethod
    def over(cls, source: ChunkValues) -> _Items:
        items = cast(_Items, cls.from_iterable(source))
        items._source = source
        return items

    def close(self) -> None:
        self._source.close()
