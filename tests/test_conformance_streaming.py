"""map streams on every backend (issue 17, points 1, 8 and 12g): an item is yielded as soon as it and every item
before it are done, whatever chunk it is in; an explicit chunksize yields per chunk, as ProcessPoolExecutor
does; yielded results are let go; the progress bar counts items and ends with true counts.

Runs on the ``make_executor``/``backend`` fixtures of tests/test_conformance.py.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import itertools
import threading
import time
import weakref
from pathlib import Path

import pytest
from support import workloads

from clustrix_futures import ClusterPoolExecutor

RESULT_WAIT = 120  # seconds: a generous bound for one result on a busy 2-core CI machine
ONE_CYCLE = 10.0  # seconds: more than one monitor cycle (poll_interval 2 s) plus an S3 piece (2 s), generously


def test_a_finished_item_is_not_held_behind_a_slow_one(make_executor, signals: Path):
    """The issue's program: ProcessPoolExecutor yields [0, 0], then times out on the 60 s item. Twice at once,
    for known and unknown lengths (unknown lengths pack items 2 and 3 in one chunk), so the suite waits for the
    two timeouts together. (A third iterable says when the 60 s items may end.)"""
    release = signals / "release"
    ex = make_executor(4)
    known = ex.map(workloads.value_after, [0, 0, 1], [0, 0, 60], [str(release)] * 3, timeout=20)
    unknown = ex.map(workloads.value_after, [0, 0, 1], [0, 0, 60], itertools.repeat(str(release)), timeout=20)
    try:
        for items in (known, unknown):
            assert [next(items), next(items)] == [0, 0]
        for items in (known, unknown):
            with pytest.raises(cf.TimeoutError):
                next(items)
    finally:
        release.touch()  # the 60 s items end now: the executor's shutdown does not wait for them


def test_items_come_within_a_cycle_of_the_slow_first_one(make_executor):
    """200 items, item 0 sleeps 10 s, the rest are instant: nothing comes before item 0 (order), and every
    other item within one cycle after it, whatever chunks they were packed in."""
    ex = make_executor()
    start = time.monotonic()
    arrivals = []
    values = []
    for value in ex.map(workloads.value_after, range(200), [10] + [0] * 199, timeout=RESULT_WAIT):
        arrivals.append(time.monotonic())
        values.append(value)
    assert values == list(range(200))
    assert arrivals[0] - start >= 10
    assert arrivals[-1] - arrivals[0] < ONE_CYCLE


def test_items_stream_out_of_a_running_chunk(make_executor, signals: Path):
    """One worker, so the first chunk holds many items: the ten before the blocked item 10 come while it is
    blocked (they would wait for their whole chunk if the map did not stream; the map's timeout says so)."""
    started, release = signals / "started", signals / "release"
    ex = make_executor(1)
    items = ex.map(workloads.block_at, range(400), [10] * 400, [str(started)] * 400, [str(release)] * 400,
                   timeout=RESULT_WAIT / 2)
    try:
        assert [next(items) for _ in range(10)] == list(range(10))
        assert started.exists() and not release.exists()
    finally:
        release.touch()
    assert list(items) == list(range(10, 400))


def test_an_explicit_chunksize_yields_per_chunk(make_executor, signals: Path):
    """chunksize=5: items 0 and 1 are done while item 2 is blocked, but they come only with their chunk."""
    started, release = signals / "started", signals / "release"
    ex = make_executor()
    got: list[int] = []
    items = ex.map(workloads.block_at, range(10), [2] * 10, [str(started)] * 10, [str(release)] * 10, chunksize=5,
                   timeout=RESULT_WAIT)
    consumer = threading.Thread(target=lambda: got.extend(items))
    consumer.start()
    try:
        deadline = time.monotonic() + RESULT_WAIT
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        time.sleep(ONE_CYCLE / 2)  # items 0 and 1 were reported meanwhile if the chunk streams
        assert got == []
    finally:
        release.touch()
    consumer.join(RESULT_WAIT)
    assert got == list(range(10))


@pytest.mark.parametrize("chunksize", [None, 41])
def test_yielded_results_are_let_go(make_executor, chunksize):
    """12g: after the consumer drops the results it was given, the map's iterator holds none of them."""
    ex = make_executor()
    items = ex.map(workloads.make_box, range(41), chunksize=chunksize, timeout=RESULT_WAIT)
    refs = [weakref.ref(next(items)) for _ in range(40)]
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0, "results still referenced"
    assert next(items).value == 40
    items.close()


def test_the_progress_bar_counts_items_and_ends_true(capsys):
    """The bar's postfix counts items, and once the map is consumed it shows none running or queued."""
    pytest.importorskip("tqdm")
    with ClusterPoolExecutor(2, backend="local") as ex:
        assert list(ex.map(workloads.value_after, range(50), [0.01] * 50, progress=True)) == list(range(50))
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "50/50" in final and "running=0" in final and "queued=0" in final and "failed=0" in final, final


def test_the_progress_postfix_counts_items_not_chunks():
    """Unit-level: a chunk of 7 items running and one of 3 queued count as 7 running and 3 queued."""
    from clustrix_futures.future import ClusterFuture
    from clustrix_futures.progressbar import item_counts

    running, queued, failed = ClusterFuture(), ClusterFuture(), ClusterFuture()
    running.set_running_or_notify_cancel()
    failed.set_exception(ValueError("x"))
    assert item_counts([(running, 7), (queued, 3), (failed, 2), (ValueError("input"), 0)]) == {
        "done": 0, "running": 7, "queued": 3, "failed": 2}


# ---------------------------------------------------------------- the part frames (runfiles/), without a backend


def _streamed_journal() -> bytes:
    """A journal as an element writes it for a chunk of items 0..9 whose items 0..3 and 4..6 were reported in
    parts while it ran (item 5 raised), then its final outcome (items 7..9)."""
    import cloudpickle

    from clustrix_futures.runfiles import journal
    from clustrix_futures.runfiles.outcomes import ChunkResult, encode_outcome

    failure = (workloads.CustomError("item 5 is bad"), "Traceback: item 5")
    frames = [journal.preamble(), journal.output_frame(3, 1.0, 0, 0),
              journal.part_frame(3, 1.1, 0, 4, cloudpickle.dumps(([0, 1, 2, 3], {}))),
              journal.part_frame(3, 1.2, 4, 3, cloudpickle.dumps(([4, None, 6], {5: failure}))),
              journal.encode_frame(3, journal.RAISED, 1.0, 1.5, encode_outcome(
                  (True, ChunkResult([7, 8, 9], {5: failure}, 0.5, first=7), "", 0.5))[1])]
    return b"".join(frames)


def test_readers_that_know_no_parts_pass_over_them():
    """Old readers' behaviour stays sound: outcome readers and output spans skip part frames (never 16 bytes)."""
    from clustrix_futures.runfiles import journal

    data = _streamed_journal()
    assert [task_id for task_id, _ in journal.read_journal(data)] == [3]
    assert journal.output_spans(data, 3) == ((0, None), (0, None))
    parts = [journal.read_part(data, frame) for frame in journal.read_frames(data)]
    assert [(p[0], p[1]) for p in parts if p] == [(0, 4), (4, 3)]


def test_a_journal_read_by_offset_in_any_pieces_gives_the_whole_chunk():
    """The cursor, fed the journal in pieces cut anywhere (torn frames wait), puts the chunk back together."""
    from clustrix_futures.runfiles.outcomes import loads_outcome
    from clustrix_futures.runfiles.parts import JournalCursor

    data = _streamed_journal()
    for cut in range(1, len(data)):
        cursor = JournalCursor()
        events = []
        for grown in (data[:cut], data):  # the journal as it was at two reads: each read from the offset on
            events += cursor.feed(grown[cursor.offset:])
        assert cursor.offset == len(data), cut
        assert [(task_id, part is None) for task_id, _, part in events] == [(3, False), (3, False), (3, True)]
        (_, encoded, _), = [event for event in events if event[1] is not None]
        for _, _, part in events[:2]:
            assert part is not None
            cursor.held.part(3, _NotStreaming(), part)
        ok, chunk, _, _ = cursor.held.outcome(3, loads_outcome(encoded))
        assert ok and chunk.first == 0 and chunk.values == [0, 1, 2, 3, 4, None, 6, 7, 8, 9]
        assert list(chunk.failures) == [5]


class _NotStreaming:
    def _add_part(self, part: object) -> bool:
        return False
