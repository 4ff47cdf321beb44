"""Large maps on the real SLURM: ranges split arithmetically, chunks sized from measured durations."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import as_completed

import cloudpickle
import pytest
from support import workloads

from clustrix_futures import chunks
from clustrix_futures.future import ClusterFuture, someone_waits
from clustrix_futures.mapping.run import Feeders, map_in_chunks
from clustrix_futures.mapping.sizing import MAX_CHUNK_ITEMS, AdaptiveSizes, ItemRate
from clustrix_futures.node.calls import apply_chunk, run_payload


def test_map_over_a_million_items_is_correct_in_order_with_few_arrays(slurm_executor, shim):
    ex = slurm_executor()
    results = ex.map(workloads.square, range(10**6))
    for expected, value in enumerate(results):
        assert value == expected * expected
    assert expected == 10**6 - 1
    assert len(shim.calls("sbatch")) <= 3
    # a range travels as sub-range descriptors: no batch file holds anything like a million items
    assert all("--array=" in " ".join(call) for call in shim.calls("sbatch"))


def test_failing_item_in_the_middle_raises_exactly_there(slurm_executor):
    ex = slurm_executor()
    seen = 0
    with pytest.raises(workloads.CustomError, match="item 500000 is bad"):
        for value in ex.map(workloads.fail_at, range(10**6), [500_000] * 10**6):
            assert value == seen
            seen += 1
    assert seen == 500_000


def test_repeated_map_skips_the_probe_and_sizes_chunks_from_learned_durations(slurm_executor, shim):
    ex = slurm_executor(2, element_seconds=0.5)
    assert list(ex.map(workloads.sleep_then, [0.05] * 40, range(40))) == list(range(40))
    first = len(shim.calls("sbatch"))
    assert first >= 2  # a probe, then the rest
    assert list(ex.map(workloads.sleep_then, [0.05] * 40, range(40))) == list(range(40))
    second = shim.calls("sbatch")[first:]
    assert len(second) == 1  # learned: no probe
    # ~0.05 s per item and 0.5 s per element: chunks of about 10 items, so about 4 elements for 40 items
    array = next(arg for arg in second[0] if arg.startswith("--array="))
    elements = int(array.split("=")[1].split("-")[1].split("%")[0]) + 1
    assert 3 <= elements <= 8


def test_a_repeated_map_of_little_work_runs_in_one_element(slurm_executor, shim):
    ex = slurm_executor()
    expected = sum(x * x for x in range(10**5))
    assert sum(ex.map(workloads.square, range(10**5))) == expected  # cold: 16 guessed chunks
    before = len(shim.calls("sbatch"))
    assert sum(ex.map(workloads.square, range(10**5))) == expected
    second = shim.calls("sbatch")[before:]
    assert len(second) == 1 and "--array=0-0" in second[0]  # milliseconds of work: not worth 16 starts


def test_client_memory_stays_small_over_ten_million_items(slurm, tmp_path):
    script = tmp_path / "rss.py"
    script.write_text(textwrap.dedent(f"""
        import resource
        from clustrix_futures import ClusterPoolExecutor
        with ClusterPoolExecutor(backend="slurm", work_dir={str(tmp_path / 'runs')!r}) as ex:
            ex.submit(abs, 1).result()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            total = sum(ex.map(abs, range(10**7)))
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(total, (after - before) // 1024)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    total, growth_mb = map(int, out.stdout.split())
    assert total == sum(range(10**7))
    assert growth_mb < 200


def test_chunks_split_ranges_arithmetically_and_iterables_lazily():
    assert list(chunks(range(10), 4)) == [range(0, 4), range(4, 8), range(8, 10)]
    assert list(chunks([1, 2, 3], 2)) == [[1, 2], [3]]
    read = []

    def source():
        for i in range(10**9):
            read.append(i)
            yield i

    first = next(chunks(source(), 3))
    assert first == [0, 1, 2] and read == [0, 1, 2]
    with pytest.raises(ValueError):
        chunks(range(3), 0)


def test_adaptive_sizes_learned_aim_at_the_target_keep_parallelism_but_never_split_below_a_fifth_of_it():
    rate = ItemRate()
    rate.add(1000, 0.01)  # 10 microseconds an item: the target (5 s) alone would want 500,000 items

    def learned(total: int, rate: ItemRate = rate) -> list[int]:
        sizes = AdaptiveSizes(total, target_seconds=5.0, min_chunks=16, rate=rate)
        assert sizes.learned
        handed: list[int] = []
        while sum(handed) < total:
            handed.append(next(sizes))
            assert not sizes.guessed
        return handed

    per_item = rate.seconds_per_item
    assert per_item is not None
    target, fifth = int(5.0 / per_item), int(1.0 / per_item)  # about 500,000 and 100,000 items
    assert learned(3 * 10**6) == [187_500] * 16  # 30 s of work: 16 chunks in parallel
    assert learned(10**8)[:2] == [target] * 2  # 1000 s: chunks of the target, 5 s each
    assert learned(5 * 10**5)[:4] == [fifth] * 4  # 5 s: 16 chunks would be 0.3 s each; about 5 of 1 s instead
    assert len(learned(99_990)) == 1  # 1 s of work: one element, not 16 starts of 0.06 s each
    fast = ItemRate()
    fast.add(1000, 0.0001)  # 0.1 microsecond an item
    assert learned(10**7, fast) == [MAX_CHUNK_ITEMS] * 10  # 1 s of work, but one chunk's values are held whole
    slow = ItemRate()
    slow.add(10, 10.0)  # 1 s an item
    assert learned(100, slow)[:2] == [5, 5]


def test_adaptive_sizes_with_a_known_total_guess_cap_sized_chunks_until_learned():
    sizes = AdaptiveSizes(10**6, target_seconds=5.0, min_chunks=16, rate=ItemRate())
    assert [next(sizes) for _ in range(16)] == [62500] * 16 and sizes.guessed  # the whole input, at once
    sizes.observe(62500, 0.0625)
    assert next(sizes) and not sizes.guessed
    unknown = AdaptiveSizes(None, target_seconds=5.0, min_chunks=16, rate=ItemRate())
    assert next(unknown) == 1 and next(unknown) == 1 and unknown.guessed  # no total: probe-sized guesses
    unknown.observe(10, 1.0)
    assert next(unknown) == 50 and not unknown.guessed
    huge = AdaptiveSizes(10**9, target_seconds=5.0, min_chunks=16, rate=ItemRate())
    assert not huge.guesses_cover and next(huge) == 1  # 16 guesses would be too big to hold: a probe first


def test_a_chunk_with_a_budget_stops_there_and_says_how_far_it_got():
    cut = apply_chunk(functools.partial(workloads.sleep_then, 0.05), range(100), False, budget=0.2)
    assert cut.stopped_at is not None and 1 <= cut.stopped_at < 100
    assert cut.values == list(range(cut.stopped_at))
    whole = apply_chunk(workloads.fail_at, [(1, 2), (2, 2), (3, 2)], True, budget=60.0)
    assert whole.stopped_at is None and whole.values == [1, None, 3] and list(whole.failures) == [1]


def test_guessed_chunks_cut_by_their_budget_are_resubmitted_in_order():
    submitted: list[bytes] = []

    def submit(payload: bytes) -> ClusterFuture:  # runs the chunk here, at once
        submitted.append(payload)
        future = ClusterFuture()
        _, value, _, _ = cloudpickle.loads(run_payload(payload))
        future.set_result(value)
        return future

    sizes = AdaptiveSizes(30, target_seconds=0.05, min_chunks=4, rate=ItemRate())
    fn = functools.partial(workloads.sleep_then, 0.02)
    assert list(map_in_chunks(submit, fn, [range(30)], sizes, None, None, True, Feeders())) == list(range(30))
    assert len(submitted) > 4  # 4 guesses of 8 items, then what their 0.05 s budgets cut off


def test_first_map_sends_the_whole_input_at_once_and_budgets_cut_slow_guesses(slurm_executor, shim):
    ex = slurm_executor(element_seconds=0.5)
    assert list(ex.map(workloads.sleep_then, [0.3] * 40)) == [None] * 40  # one iterable: its length is known
    calls = shim.calls("sbatch")
    first = next(arg for arg in calls[0] if arg.startswith("--array="))
    assert first.startswith("--array=0-13")  # 14 guesses of 3 items (40 / 16, rounded up): the whole input
    assert len(calls) >= 2  # 0.3 s items under a 0.5 s budget: each guess was cut, the rest sent again
    assert list(ex.map(workloads.sleep_then, [0.3] * 40)) == [None] * 40
    assert len(shim.calls("sbatch")) == len(calls) + 1  # learned: one array, nothing cut


def test_someone_waits_counts_threads_blocked_on_cluster_futures():
    future, other = ClusterFuture(), ClusterFuture()
    assert not someone_waits()
    for wait in (future.result, lambda: list(as_completed([future, other]))):
        thread = threading.Thread(target=wait)
        thread.start()
        while not someone_waits():
            thread.join(0.01)
        future.set_result(1) if not future.done() else other.set_result(2)
        thread.join()
        assert not someone_waits()
