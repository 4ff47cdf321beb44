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


@pytest.mark.parametrize("lengths", ["known", "unknown"])
def test_a_finished_item_is_not_held_behind_a_slow_one(make_executor, signals: Path, lengths):
    """The issue's program: ProcessPoolExecutor yields [0, 0], then times out on the 60 s item. (A third
    iterable says when the 60 s item may end; unknown lengths pack items 2 and 3 in one chunk.)"""
    release = signals / "release"
    releases = [str(release)] * 3 if lengths == "known" else itertools.repeat(str(release))
    ex = make_executor()
    items = ex.map(workloads.value_after, [0, 0, 1], [0, 0, 60], releases, timeout=20)
    try:
        assert [next(items), next(items)] == [0, 0]
        with pytest.raises(cf.TimeoutError):
            next(items)
    finally:
        release.touch()  # the 60 s item ends now: the executor's shutdown does not wait for it


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
