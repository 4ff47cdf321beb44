"""ClusterPoolExecutor on Grid Engine against raw qsub, on the local Son of Grid Engine of tests/infra/sge.sh.

Run: ``python benchmarks/bench_sge.py`` (add ``--tasks N`` to change the 1000).

(a) latency of one trivial submit -> result, against a binary ``qsub`` of the same interpreter writing a
    pickle, polled every 50 ms;
(b) N trivial tasks end to end, against a raw ``qsub -t 1-N`` whose tasks each write a pickle: ours with one
    task per element (the same shape), and ours packing tasks into elements from measured durations (the
    default, after a warm-up that measures them);
(c) the scheduler commands each of ours issued.

The local Grid Engine schedules every second (``schedule_interval 0:0:1``) on one exec host of 16 slots; its
figures are this machine's, not a cluster's. The load average is printed at the start and the end: on a
shared machine, compare only figures taken at a low load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from clustrix_futures import ClusterPoolExecutor

# argv[1] is the pickle to write; in an array the task id is read from SGE_TASK_ID (binary jobs get no shell).
WRITE_PICKLE = ("import pickle, os, sys; p = sys.argv[1].replace('TASK', os.environ.get('SGE_TASK_ID', '')); "
                "open(p + '.tmp', 'wb').write(pickle.dumps(42)); os.replace(p + '.tmp', p)")


def trivial(x: int) -> int:
    return x + 1


def wait_for(paths: list[Path], poll: float = 0.05) -> None:
    pending = list(paths)
    while pending:
        pending = [p for p in pending if not p.exists()]
        if pending:
            time.sleep(poll)


def qsub(scratch: Path, *options: str, target: str) -> None:
    subprocess.run(["qsub", "-terse", *options, "-wd", str(scratch), "-o", "/dev/null", "-e", "/dev/null",
                    "-b", "y", "-shell", "no", sys.executable, "-c", WRITE_PICKLE, target],
                   check=True, capture_output=True)


def raw_single(scratch: Path) -> float:
    out = scratch / f"single-{time.monotonic_ns()}.pkl"
    start = time.perf_counter()
    qsub(scratch, target=str(out))
    wait_for([out])
    return time.perf_counter() - start


def raw_array(scratch: Path, tasks: int) -> float:
    directory = scratch / f"array-{time.monotonic_ns()}"
    directory.mkdir()
    start = time.perf_counter()
    qsub(scratch, "-t", f"1-{tasks}", target=f"{directory}/TASK.pkl")
    wait_for([directory / f"{i}.pkl" for i in range(1, tasks + 1)], poll=0.25)
    return time.perf_counter() - start


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="latency samples (median is reported)")
    args = parser.parse_args()
    if shutil.which("qsub") is None or shutil.which("qacct") is None:
        sys.exit("no Grid Engine qsub on PATH: run `bash tests/infra/sge.sh up` first")
    scratch = Path(tempfile.mkdtemp(prefix="cf-bench-sge-"))
    work_dir = str(scratch / "runs")
    n = args.tasks
    print(f"Grid Engine on {os.uname().nodename}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"load average {load()} at the start")

    raw_latencies = [raw_single(scratch) for _ in range(args.repeat)]
    with ClusterPoolExecutor(backend="sge", work_dir=work_dir) as ex:
        ours_latencies = [timed(lambda: ex.submit(trivial, 1).result()) for _ in range(args.repeat)]
    raw_latency, ours_latency = statistics.median(raw_latencies), statistics.median(ours_latencies)

    raw_time = raw_array(scratch, n)
    with ClusterPoolExecutor(backend="sge", work_dir=work_dir, tasks_per_element=1) as ex:
        one_per_element = timed(lambda: [f.result() for f in [ex.submit(trivial, i) for i in range(n)]])
        one_commands = ex.scheduler_commands
    with ClusterPoolExecutor(backend="sge", work_dir=work_dir) as ex:
        [f.result() for f in [ex.submit(trivial, i) for i in range(16)]]  # measures task durations
        before = ex.scheduler_commands
        packed = timed(lambda: [f.result() for f in [ex.submit(trivial, i) for i in range(n)]])
        packed_commands = {k: v - before.get(k, 0) for k, v in ex.scheduler_commands.items()}

    def row(label: str, seconds: float, note: str = "") -> None:
        print(f"    {label:<38s}{seconds:8.3f} s   {note}".rstrip())

    print(f"\n(a) one trivial task, submit -> result (median of {args.repeat})")
    row("raw qsub -b y + 50 ms polling", raw_latency)
    row("ClusterPoolExecutor", ours_latency, f"ours - raw = {ours_latency - raw_latency:+.3f} s")
    print(f"\n(b) {n} trivial tasks, end to end")
    row(f"raw qsub -t 1-{n}", raw_time)
    row("ours, 1 task per element", one_per_element, f"ratio {one_per_element / raw_time:.2f}x")
    row("ours, packed from measured times", packed, f"ratio {packed / raw_time:.2f}x")
    print(f"\n(c) scheduler commands for {n} tasks")
    print(f"    1 task per element: {one_commands}")
    print(f"    packed:             {packed_commands}")
    print(f"\nload average {load()} at the end")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
