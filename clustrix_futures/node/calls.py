"""Running tasks: one call (:func:`run_payload`, :func:`run_recorded`, :func:`journal_frame`, with
:func:`output_frame` before it when its output is recorded), or one chunk of a
map (:func:`apply_chunk`).

A *task payload* is ``cloudpickle.dumps((fn, args, kwargs))``, perhaps followed by its sources; it is loaded by
:func:`clustrix_futures.node.loading.loads_task` (one namespace per by-value module in this process). Running
it gives an outcome, encoded as :mod:`clustrix_futures.runfiles.outcomes` defines: whatever the task does, its
encoded outcome unpickles.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

import cloudpickle

from clustrix_futures.node.loading import loads_task
from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.outcomes import ChunkResult, Outcome, encode_outcome, travelling_exception

MAX_STEP = 4096  # items run between two looks at the clock, once items have proved fast
REPORT_SECONDS = 0.02  # a running chunk's finished items are reported at most this often, and not before

PartSink = Callable[[int, int, bytes], None]  # (first item, count, pickled (values, failures)) of a chunk part
part_sink: Optional[PartSink] = None  # set by the worker's loop: where a running chunk's parts go; None: nowhere
running: Optional[tuple[int, Callable[..., Any], Sequence[Any], dict]] = None  # the element's task now running


class Recorded:  # a plain class: making a NamedTuple costs the node's start-up
    """A task's encoded ``outcome``, whether it succeeded (``ok``: False too for a map chunk with an item that
    raised), and when it ran (``start`` and ``end``,
    wall clock: ``time.time()``)."""

    __slots__ = ("end", "ok", "outcome", "start")

    def __init__(self, ok: bool, outcome: bytes, start: float, end: float) -> None:
        self.ok, self.outcome, self.start, self.end = ok, outcome, start, end


def run_call(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict) -> Outcome:
    start = time.perf_counter()
    try:
        return (True, fn(*args, **kwargs), "", time.perf_counter() - start)
    except BaseException as exc:
        exc, text = travelling_exception(exc)
        return (False, exc, text, time.perf_counter() - start)


def run_recorded(payload: bytes, task_id: Optional[int] = None, items_done: int = 0) -> Recorded:
    """Unpickle a task payload, run it (as :data:`running`, when its ``task_id`` is given), and encode its
    outcome. A map chunk whose first ``items_done`` items an earlier run of its element reported (and the
    client has) runs from the next one on."""
    global running
    start = time.time()
    try:
        fn, args, kwargs = loads_task(payload)
    except BaseException as exc:
        err, text = travelling_exception(exc)
        outcome: Outcome = (False, err, "the task could not be unpickled on the worker:\n" + text, 0.0)
    else:
        if items_done and fn is apply_chunk:
            kwargs = {**kwargs, "skip": items_done}
        running = None if task_id is None else (task_id, fn, args, kwargs)
        outcome = run_call(fn, args, kwargs)
        running = None
    ok, encoded = encode_outcome(outcome)
    if ok and isinstance(outcome[1], ChunkResult) and outcome[1].failures:
        ok = False  # a map chunk some of whose items raised: its journal header says so (status counts it)
    return Recorded(ok, encoded, start, time.time())


def run_payload(payload: bytes) -> bytes:
    """Unpickle a task payload, run it, and return its encoded outcome."""
    return run_recorded(payload).outcome


def journal_frame(task_id: int, payload: bytes, items_done: int = 0) -> bytes:
    """Run one task (a map chunk from its item ``items_done``: :func:`run_recorded`); its frame of the result
    journal (:mod:`clustrix_futures.runfiles.journal`)."""
    ran = run_recorded(payload, task_id, items_done)
    return journal.encode_frame(task_id, journal.OK if ran.ok else journal.RAISED, ran.start, ran.end, ran.outcome)


def output_frame(task_id: int) -> bytes:
    """The journal frame saying where the task starting now begins in this element's stdout and stderr (their
    sizes, once what earlier tasks printed is flushed; 0 for a stream that is not a file)."""
    flush_output()
    offsets = []
    for stream in (sys.stdout, sys.stderr):
        try:
            offsets.append(os.fstat(stream.fileno()).st_size)
        except (OSError, ValueError, AttributeError):  # closed, replaced, or not a file
            offsets.append(0)
    return journal.output_frame(task_id, time.time(), offsets[0], offsets[1])


def flush_output() -> None:
    """Flush what tasks printed to ``sys.stdout`` and ``sys.stderr`` (a task may have closed or replaced them)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def apply_chunk(fn: Callable[..., Any], items: Iterable[Any], star: bool,
                budget: Optional[float] = None, skip: int = 0) -> ChunkResult:
    """Run ``fn`` over a chunk of a map. One failing item loses no other: the run goes on after it.

    The items run in one ``map()`` (no per-item bookkeeping); only a raising item costs extra. With a
    ``budget`` (seconds), the chunk stops at the first look at the clock past it and reports how far it got
    (``ChunkResult.stopped_at``): the clock is read after 1, 2, 4 ... items (at most ``MAX_STEP`` apart,
    and never more items than the budget left is expected to fit), so a chunk runs at most its budget plus
    one item, and fast items pay a few dozen clock reads per chunk.

    Where the worker set :data:`part_sink`, the items that finished are reported while the chunk runs, at most
    every ``REPORT_SECONDS`` (:class:`_Reporter`, a thread: the loop above is untouched), and the chunk's
    result holds only the items after the last part sent (``ChunkResult.first``).

    An element run again after it died skips the ``skip`` items its earlier run reported (the client has them):
    the chunk goes on from there, and says so first with a part of no items at ``skip``, so that a third run
    knows where this one started.
    """
    values: list[Any] = [None] * skip  # positions stay the chunk's own
    failures: dict[int, tuple[BaseException, str]] = {}
    items = itertools.islice(items, skip, None) if skip else items
    sink = part_sink
    if sink is None:
        chunk = _run_chunk(fn, items, star, budget, values, failures)
        if not skip:
            return chunk
        return ChunkResult(values[skip:], failures, chunk.seconds, stopped_at=chunk.stopped_at, first=skip)
    if skip:
        sink(skip, 0, cloudpickle.dumps(([], {}), protocol=5))
    reporter = _reporter()
    reporter.watch(values, failures, sink, skip)
    try:
        chunk = _run_chunk(fn, items, star, budget, values, failures)
    finally:
        sent = reporter.finish()
    if not sent:
        return chunk
    rest = {position: failure for position, failure in failures.items() if position >= sent}
    if len(rest) < len(failures):  # the first failure stays in the result too: its header says it failed
        rest[min(failures)] = failures[min(failures)]
    return ChunkResult(values[sent:], rest, chunk.seconds, stopped_at=chunk.stopped_at, first=sent)


def _run_chunk(fn: Callable[..., Any], items: Iterable[Any], star: bool, budget: Optional[float],
               values: list[Any], failures: dict[int, tuple[BaseException, str]]) -> ChunkResult:
    remaining = iter(items)
    skipped = len(values)
    start = time.perf_counter()
    deadline = None if budget is None else start + budget
    step = 1
    while True:
        try:
            if deadline is None:
                values.extend(itertools.starmap(fn, remaining) if star else map(fn, remaining))
                return ChunkResult(values, failures, time.perf_counter() - start)
            while True:
                before = len(values)
                part = itertools.islice(remaining, step)
                values.extend(itertools.starmap(fn, part) if star else map(fn, part))
                now = time.perf_counter()
                if len(values) - before < step:
                    return ChunkResult(values, failures, now - start)
                if now >= deadline:
                    return ChunkResult(values, failures, now - start, stopped_at=len(values))
                per_item = (now - start) / (len(values) - skipped)
                step = max(1, min(step * 2, MAX_STEP, int((deadline - now) / max(per_item, 1e-9))))
        except BaseException as exc:
            failures[len(values)] = travelling_exception(exc)
            values.append(None)


class _Reporter:
    """The thread that sends the finished items of the running chunk to its sink, every ``REPORT_SECONDS``
    while a chunk runs (one per process, started with the first chunk: a chunk costs no thread start).

    It reads the chunk's ``values`` as ``list.extend`` grows them item by item, and a C-level copy of its
    ``failures``; the chunk's thread stops it (:meth:`finish`) before it builds the chunk's result, under the
    same lock, so a part is never sent after the result, nor an item twice. A part that does not pickle (or a
    sink that fails) ends the reporting of that chunk: its result then carries the rest.
    """

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._running = threading.Event()
        self._chunk: Optional[tuple[list[Any], dict[int, Any], PartSink]] = None
        self._sent = 0
        threading.Thread(target=self._loop, name="clustrix-futures-parts", daemon=True).start()

    def watch(self, values: list[Any], failures: dict[int, Any], sink: PartSink, sent: int = 0) -> None:
        with self._lock:
            self._chunk, self._sent = (values, failures, sink), sent
        self._running.set()

    def finish(self) -> int:
        """Stop reporting the chunk; how many of its items were sent."""
        with self._lock:
            self._chunk = None
            self._running.clear()
            return self._sent

    def _loop(self) -> None:
        while True:
            self._running.wait()
            time.sleep(REPORT_SECONDS)
            with self._lock:
                if self._chunk is not None:
                    self._send(*self._chunk)

    def _send(self, values: list[Any], failures: dict[int, Any], sink: PartSink) -> None:
        first, end = self._sent, len(values)
        if end <= first:
            return
        failed = {position: failure for position, failure in dict(failures).items() if first <= position < end}
        try:
            blob = cloudpickle.dumps((values[first:end], failed), protocol=5)
            sink(first, end - first, blob)
        except Exception:
            self._chunk = None  # the chunk's result carries everything from here on
            return
        self._sent = end


_the_reporter: Optional[_Reporter] = None


def _reporter() -> _Reporter:
    global _the_reporter
    if _the_reporter is None:
        _the_reporter = _Reporter()
    return _the_reporter
