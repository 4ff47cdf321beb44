"""ClusterPoolExecutor on SLURM against raw sbatch, on the local SLURM of tests/infra/slurm.sh.

Run: ``python benchmarks/bench_slurm.py`` (add ``--tasks N`` to change the 1000).

(a) latency of one trivial submit -> result, against ``sbatch --wrap`` of the same interpreter writing a
    pickle, polled every 50 ms;
(b) N trivial tasks end to end, against a raw ``sbatch --array=0-(N-1)`` whose elements each write a
    pickle: ours with one task per element (the same shape), and ours packing tasks into elements from
    measured durations (the default, after a warm-up that measures them);
(c) the scheduler commands each of ours issued.
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
from pathlib import Path
from typing import Callable

from clustrix_futures import ClusterPoolExecutor

WRITE_PICKLE = "import pickle, os, sys; p = sys.argv[1]; open(p + '.tmp', 'wb').write(pickle.dumps(42)); os.replace(p + '.tmp', p)"


def trivial(x: int) -> int:
    return x + 1


def wait_for(paths: list[Path], poll: float = 0.05) -> None:
    pending = list(paths)
    while pending:
        pending = [p for p in pending if not p.exists()]
        if pending:
            time.sleep(poll)


def raw_single(scratch: Path) -> float:
    out = scratch / f"single-{time.monotonic_ns()}.pkl"
    start = time.perf_counter()
    subprocess.run(["sbatch", "--parsable", f"--output={scratch}/raw-%j.log",
                    f"--wrap={sys.executable} -c \"{WRITE_PICKLE}\" {out}"], check=True, capture_output=True)
    wait_for([out])
    return time.perf_counter() - start


def raw_array(scratch: Path, tasks: int) -> float:
    directory = scratch / f"array-{time.monotonic_ns()}"
    directory.mkdir()
    start = time.perf_counter()
    subprocess.run(["sbatch", "--parsable", f"--array=0-{tasks - 1}", f"--output={directory}/%a.log",
                    f"--wrap={sys.executable} -c \"{WRITE_PICKLE}\" {directory}/$SLURM_ARRAY_TASK_ID.pkl"],
                   check=True, capture_output=True)
    wait_for([directory / f"{i}.pkl" for i in range(tasks)], poll=0.25)
    return time.perf_counter() - start


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="latency samples (median is reported)")
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        sys.exit("no sbatch on PATH: run `bash tests/infra/slurm.sh up` first")
    scratch = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    work_dir = str(scratch / "runs")
    n = args.tasks

    raw_latencies = [raw_single(scratch) for _ in range(args.repeat)]
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir) as ex:
        ours_latencies = [timed(lambda: ex.submit(trivial, 1).result()) for _ in range(args.repeat)]
    raw_latency, ours_latency = statistics.median(raw_latencies), statistics.median(ours_latencies)

    raw_time = raw_array(scratch, n)
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir, tasks_per_element=1) as ex:
        one_per_element = timed(lambda: [f.result() for f in [ex.submit(trivial, i) for i in range(n)]])
        one_commands = ex.scheduler_commands
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir) as ex:
        [f.result() for f in [ex.submit(trivial, i) for i in range(16)]]  # measures task durations
        before = ex.scheduler_commands
        packed = timed(lambda: [f.result() for f in [ex.submit(trivial, i) for i in range(n)]])
        packed_commands = {k: v - before.get(k, 0) for k, v in ex.scheduler_commands.items()}

    print(f"SLURM on {os.uname().nodename}, Python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    print("(a) one trivial task, submit -> result (median of %d)" % args.repeat)
    print(f"    raw sbatch --wrap + 50 ms polling   {raw_latency:8.3f} s")
    print(f"    ClusterPoolExecutor                 {ours_latency:8.3f} s   ours - raw = {ours_latency - raw_latency:+.3f} s"
          f"   (target <= +0.3 s: {'MET' if ours_latency - raw_latency <= 0.3 else 'NOT MET'})")
    print(f"\n(b) {n} trivial tasks, end to end")
    print(f"    raw sbatch --array=0-{n - 1}           {raw_time:8.3f} s")
    print(f"    ours, 1 task per element            {one_per_element:8.3f} s   ratio {one_per_element / raw_time:.2f}x"
          f"   (target <= 1.2x: {'MET' if one_per_element / raw_time <= 1.2 else 'NOT MET'})")
    print(f"    ours, packed from measured times     {packed:8.3f} s   ratio {packed / raw_time:.2f}x")
    print(f"\n(c) scheduler commands for {n} tasks")
    print(f"    1 task per element: {one_commands}")
    print(f"    packed:             {packed_commands}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
