"""Local-process benchmark: ``ClusterPoolExecutor()`` against ``concurrent.futures.ProcessPoolExecutor``.

Run from the repository root::

    python benchmarks/bench_local.py [--workers N] [--repeat R]

Everything is measured in the same run, with the same number of workers, and each figure is the best of
``R`` repetitions on an already warm pool (process start-up is not counted):

1. per-task submit overhead: ``N_SUBMITS`` no-op ``submit`` calls, then ``concurrent.futures.wait`` on all;
2. ``map`` of a tiny function over ``range(N_MAP_ITEMS)``, consumed fully: the stdlib pool with
   ``chunksize=1`` (scaled linearly from a smaller input when it would take too long, and said so), the
   stdlib pool at the best of a sweep of chunk sizes, and ours with its default chunk size.

Only the standard library and ``clustrix_futures`` are used.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Optional

from clustrix_futures import ClusterPoolExecutor

N_SUBMITS = 10**4
N_MAP_ITEMS = 10**6
CHUNKSIZE_SWEEP = (100, 1_000, 10_000, 62_500)
SLOW_LIMIT_S = 60.0  # above this estimated time, PPE chunksize=1 runs on a smaller input and is scaled
SLOW_ITEMS = 10**5  # the smaller input
PROBE_ITEMS = 10**4  # what the estimate is taken from
TARGET_VS_BEST = 1.0  # ours / PPE-best-chunksize must be at most this
TARGET_SPEEDUP_VS_CS1 = 10.0  # PPE-chunksize-1 / ours must be at least this


# --------------------------------------------------------------------------- the tasks (module-level: picklable)


def noop(x: int) -> None:
    return None


def tiny(x: int) -> int:
    return x + 1


def warm_task(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    benchmark: str
    executor: str
    setting: str
    items: int
    seconds: float
    note: str = ""

    @property
    def us_per_item(self) -> float:
        return self.seconds / self.items * 1e6


def warm_up(executor: Executor, workers: int) -> None:
    """Run tasks until every worker process has started and run one, so start-up is never timed."""
    pids: set[int] = set()
    for _ in range(20):
        pids.update(f.result() for f in [executor.submit(warm_task, 0.05) for _ in range(2 * workers)])
        if len(pids) >= workers:
            return
    print(f"warning: only {len(pids)} of {workers} workers answered the warm-up", file=sys.stderr)


def best_of(repeat: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def time_submits(executor: Executor, n: int, repeat: int) -> float:
    def run() -> None:
        futures = [executor.submit(noop, i) for i in range(n)]
        done, not_done = wait(futures)
        assert not not_done and all(f.exception() is None for f in done)

    return best_of(repeat, run)


def consume_map(executor: Executor, n: int, chunksize: Optional[int]) -> None:
    options = {} if chunksize is None else {"chunksize": chunksize}
    total = sum(executor.map(tiny, range(n), **options))
    expected = n * (n + 1) // 2
    assert total == expected, f"map returned a wrong sum: {total} != {expected}"


def time_map(executor: Executor, n: int, chunksize: Optional[int], repeat: int) -> float:
    return best_of(repeat, lambda: consume_map(executor, n, chunksize))


# --------------------------------------------------------------------------- the benchmark


def run_benchmarks(workers: int, repeat: int) -> list[Row]:
    rows: list[Row] = []
    with ProcessPoolExecutor(max_workers=workers) as ppe, ClusterPoolExecutor(max_workers=workers) as ours:
        warm_up(ppe, workers)
        warm_up(ours, workers)

        # 1. per-task submit overhead
        rows.append(Row("submit", "ProcessPoolExecutor", "-", N_SUBMITS, time_submits(ppe, N_SUBMITS, repeat)))
        rows.append(Row("submit", "ClusterPoolExecutor", "-", N_SUBMITS, time_submits(ours, N_SUBMITS, repeat)))

        # 2a. PPE chunksize=1, on a smaller input and scaled linearly if the full one would take too long
        probe = time_map(ppe, PROBE_ITEMS, 1, 1)
        estimate = probe * N_MAP_ITEMS / PROBE_ITEMS
        if estimate > SLOW_LIMIT_S:
            measured = time_map(ppe, SLOW_ITEMS, 1, repeat)
            note = f"measured on {SLOW_ITEMS:.0e} items ({measured:.2f} s), scaled x{N_MAP_ITEMS // SLOW_ITEMS}"
            rows.append(Row("map", "ProcessPoolExecutor", "chunksize=1", N_MAP_ITEMS,
                            measured * N_MAP_ITEMS / SLOW_ITEMS, note))
        else:
            rows.append(Row("map", "ProcessPoolExecutor", "chunksize=1", N_MAP_ITEMS,
                            time_map(ppe, N_MAP_ITEMS, 1, repeat)))

        # 2b. PPE over a sweep of chunk sizes, plus the size our default picks (N / (16 * workers))
        sweep = sorted({*CHUNKSIZE_SWEEP, max(1, N_MAP_ITEMS // (16 * workers))})
        for chunksize in sweep:
            rows.append(Row("map", "ProcessPoolExecutor", f"chunksize={chunksize}", N_MAP_ITEMS,
                            time_map(ppe, N_MAP_ITEMS, chunksize, repeat), "sweep"))

        # 2c. ours, default chunk size
        rows.append(Row("map", "ClusterPoolExecutor", "default", N_MAP_ITEMS,
                        time_map(ours, N_MAP_ITEMS, None, repeat)))
    return rows


# --------------------------------------------------------------------------- reporting


def print_table(rows: list[Row]) -> None:
    headers = ("benchmark", "executor", "setting", "items", "best s", "us/item", "note")
    cells = [(r.benchmark, r.executor, r.setting, f"{r.items:,}", f"{r.seconds:.3f}", f"{r.us_per_item:.2f}",
              r.note) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    right = {3, 4, 5}

    def line(values: tuple[str, ...]) -> str:
        return " | ".join(v.rjust(w) if i in right else v.ljust(w)
                          for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    print(line(headers))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(line(c))


def report(rows: list[Row], workers: int, repeat: int) -> None:
    def find(benchmark: str, executor: str, setting: Optional[str] = None) -> Row:
        return next(r for r in rows if r.benchmark == benchmark and r.executor == executor
                    and (setting is None or r.setting == setting))

    ppe_submit = find("submit", "ProcessPoolExecutor")
    our_submit = find("submit", "ClusterPoolExecutor")
    ppe_cs1 = find("map", "ProcessPoolExecutor", "chunksize=1")
    ppe_best = min((r for r in rows if r.note == "sweep"), key=lambda r: r.seconds)
    ours_map = find("map", "ClusterPoolExecutor")

    print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs; workers={workers}, best of {repeat}")
    print()
    print_table(rows)
    if ppe_cs1.note:
        print(f"\nNote: ProcessPoolExecutor chunksize=1 {ppe_cs1.note} (estimated > {SLOW_LIMIT_S:.0f} s on "
              f"{N_MAP_ITEMS:,} items).")
    print(f"Best ProcessPoolExecutor chunk size in the sweep: {ppe_best.setting} ({ppe_best.seconds:.3f} s).")

    submit_ratio = our_submit.seconds / ppe_submit.seconds
    best_ratio = ours_map.seconds / ppe_best.seconds
    cs1_speedup = ppe_cs1.seconds / ours_map.seconds
    print()
    print("Ratios (ours / ProcessPoolExecutor, time; lower is better):")
    print(f"  submit overhead:             {submit_ratio:.2f}  "
          f"({our_submit.us_per_item:.1f} us vs {ppe_submit.us_per_item:.1f} us per task)")
    print(f"  map vs PPE best chunksize:   {best_ratio:.2f}  (PPE {ppe_best.setting})")
    print(f"  map vs PPE chunksize=1:      {1 / cs1_speedup:.4f}  (ours is {cs1_speedup:.1f}x faster)")
    print()
    print("Targets:")
    met = best_ratio <= TARGET_VS_BEST
    print(f"  map, ours / PPE-best <= {TARGET_VS_BEST:.1f}: {best_ratio:.2f} -> {'MET' if met else 'NOT MET'}")
    met = cs1_speedup >= TARGET_SPEEDUP_VS_CS1
    print(f"  map, ours >= {TARGET_SPEEDUP_VS_CS1:.0f}x faster than PPE chunksize=1: {cs1_speedup:.1f}x -> "
          f"{'MET' if met else 'NOT MET'}")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes for both pools (default: os.cpu_count())")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the best is kept (default: 3)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.repeat < 1:
        parser.error("--workers and --repeat must be at least 1")
    start = time.perf_counter()
    rows = run_benchmarks(args.workers, args.repeat)
    report(rows, args.workers, args.repeat)
    print(f"\n(total run time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
