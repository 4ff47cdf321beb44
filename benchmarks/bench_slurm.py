"""ClusterPoolExecutor on SLURM against raw sbatch, on the local SLURM of tests/infra/slurm.sh.

Run: ``python benchmarks/bench_slurm.py`` (add ``--tasks N`` to change the 1000).

(a) latency of one trivial submit -> result, against ``sbatch --wrap`` of the same interpreter writing a
    pickle, polled every 50 ms;
(b) N trivial tasks end to end, against a raw ``sbatch --array=0-(N-1)`` whose elements each write a
    pickle: ours with one task per element (the same shape), and ours packing tasks into elements from
    measured durations (the default, after a warm-up that measures them);
(c) the scheduler commands each of ours issued, and the RPCs per 1000 tasks each contender of (b) cost slurmctld
    (``sdiag`` before and 2 s after it, read with clustrix_futures.tools.sdiag), with submitit's ``map_array`` of
    the same N tasks beside them when submitit is installed;
(d) ``map`` of a tiny function over ``range(10**6)`` (consumed with ``sum``), against the floor: a hand-written
    ``sbatch --array=0-15`` whose elements each compute one of the same 16 slices with ``python -c`` and write
    the list of values as a pickle, the client loading and summing each pickle as it appears (polled every
    50 ms). Ours cold (the executor's first map of the function: 16 equal guessed elements in one array, each
    under a time budget; see clustrix_futures.mapping.sizing.AdaptiveSizes) and warm (the second map of the same
    function in the same executor: sizes learned from the first), each with the client's peak RSS during the
    map (the peak is reset at the map's start through /proc/self/clear_refs, then read with resource.getrusage);
(e) submitit's ``map_array`` over the same 16 slices (``AutoExecutor``, ``slurm_array_parallelism=16``),
    results collected, when submitit is installed;
(f) N trivial tasks submitted over SSH (the test sshd of tests/infra/sshd.sh, user cfuser, its bare
    /usr/bin/python3) against the same tasks submitted here to the same SLURM, packed after a warm-up
    (``--ssh-only`` runs just this).

(d) and (e) run ``--map-repeat`` rounds (default 3), each round running every contender once; the targets are
judged on the median of the per-round ratios, so load from other users hits both sides of a ratio. Every
contender starts on an idle queue: before each, the benchmark waits until none of this user's jobs is left in
squeue (the jobs of the one before may still be completing when its client has every result; on 2 cores their
clean-up delays the next one's start by up to a second).
The machine's load average is printed at the start and the end: on a shared machine, compare only figures
taken at a low load.

(g) a user's first map: timed from before ``ClusterPoolExecutor(...)`` to the end of its ``with`` block, the map
    of (d) summed, each round a new executor (so the start-up, the run directory and the shutdown count; from
    the second round on the site cache of clustrix_futures.engine.sitecache spares the interpreter probe and
    ``scontrol show config``), against the floor of (d), ``--first-map-repeat`` interleaved rounds (default 5);
(h) ``--burst-tasks`` (200) trivial submits on a fresh executor, every result collected, against a raw
    ``sbatch --array`` of as many elements, and the sbatch calls ours made, ``--burst-repeat`` rounds (default 3).

``--map-only`` runs (d) and (e) alone, ``--first-map-only`` (g) and ``--burst-only`` (h).
"""

from __future__ import annotations

import argparse
import getpass
import os
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional, TypeVar

from clustrix_futures import ClusterPoolExecutor, chunks, config
from clustrix_futures.tools.sdiag import SETTLE, Meter

WRITE_PICKLE = ("import pickle, os, sys; p = sys.argv[1]; open(p + '.tmp', 'wb').write(pickle.dumps(42)); "
                "os.replace(p + '.tmp', p)")
BaseT = TypeVar("BaseT")
OursT = TypeVar("OursT")
RPC_TYPES = ("REQUEST_SUBMIT_BATCH_JOB", "REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE",
             "REQUEST_COMPLETE_BATCH_SCRIPT")  # the columns of (c)'s RPC table, besides the totals
MAP_ITEMS = 10**6
MAP_ELEMENTS = 16
IDLE_WAIT = 60.0  # the longest wait for an idle queue before a contender of (d) and (e)
# one floor element: the values of slice $1 of range(MAP_ITEMS) in MAP_ELEMENTS slices, pickled to $2/$1.pkl
FLOOR_ELEMENT = ("import pickle, os, sys; i = int(sys.argv[1]); size = -(-{n} // {k}); "
                 "r = range(i * size, min({n}, (i + 1) * size)); p = sys.argv[2] + '/%d.pkl' % i; "
                 "open(p + '.tmp', 'wb').write(pickle.dumps([x + 1 for x in r])); os.replace(p + '.tmp', p)")


def trivial(x: int) -> int:
    return x + 1


def tiny(x: int) -> int:
    return x + 1


def slice_values(start: int, stop: int) -> list[int]:
    return [tiny(x) for x in range(start, stop)]


def map_slices() -> list[range]:
    return list(chunks(range(MAP_ITEMS), -(-MAP_ITEMS // MAP_ELEMENTS)))


def expected_map_sum() -> int:
    return sum(range(MAP_ITEMS)) + MAP_ITEMS


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


def raw_map_floor(scratch: Path) -> float:
    """The 16-element array computing the map's slices, each pickle loaded and summed as soon as it exists."""
    directory = scratch / f"floor-{time.monotonic_ns()}"
    directory.mkdir()
    code = FLOOR_ELEMENT.format(n=MAP_ITEMS, k=MAP_ELEMENTS)
    start = time.perf_counter()
    subprocess.run(["sbatch", "--parsable", f"--array=0-{MAP_ELEMENTS - 1}", f"--output={directory}/%a.log",
                    f"--wrap={sys.executable} -c \"{code}\" $SLURM_ARRAY_TASK_ID {directory}"],
                   check=True, capture_output=True)
    total = 0
    for i in range(MAP_ELEMENTS):
        path = directory / f"{i}.pkl"
        wait_for([path])
        total += sum(pickle.loads(path.read_bytes()))
    elapsed = time.perf_counter() - start
    assert total == expected_map_sum(), total
    return elapsed


def idle_queue() -> None:
    """Wait until squeue shows none of this user's jobs (the previous contender's, still completing)."""
    deadline = time.monotonic() + IDLE_WAIT
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "--noheader", f"--user={os.getuid()}", "--format=%i"],
                               capture_output=True, text=True)
        if queue.returncode == 0 and not queue.stdout.strip():
            return
        time.sleep(0.1)
    print(f"    (jobs were still queued after {IDLE_WAIT:.0f} s; measuring anyway)")


def reset_peak_rss() -> bool:
    """Make the peak RSS (getrusage's ru_maxrss) start again from the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> Optional[float]:
    try:
        with open("/proc/self/status") as handle:
            line = next(line for line in handle if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return None


def measured_map(ex: ClusterPoolExecutor) -> tuple[float, float, float, dict[str, int]]:
    """Seconds, peak RSS (MB) and its growth over the RSS at the start, scheduler commands: one map."""
    commands = ex.scheduler_commands
    was_reset = reset_peak_rss()
    start_rss = current_rss_mb() if was_reset else None
    start_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    total = sum(ex.map(tiny, range(MAP_ITEMS)))
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert total == expected_map_sum(), total
    growth = peak - (start_rss if start_rss is not None else start_peak)
    used = {k: v - commands.get(k, 0) for k, v in ex.scheduler_commands.items() if v != commands.get(k, 0)}
    return elapsed, peak, growth, used


def submitit_map(scratch: Path) -> Optional[float]:
    """submitit's map_array over the same slices, every result collected; None without submitit."""
    try:
        import submitit
    except ImportError:
        return None
    import logging

    logging.getLogger("submitit").setLevel(logging.ERROR)  # it warns on every sacct call (no accounting here)
    executor = submitit.AutoExecutor(folder=str(scratch / "submitit"), cluster="slurm")
    executor.update_parameters(slurm_array_parallelism=MAP_ELEMENTS, timeout_min=30)
    slices = map_slices()
    start = time.perf_counter()
    jobs = executor.map_array(slice_values, [r.start for r in slices], [r.stop for r in slices])
    total = sum(sum(job.result()) for job in jobs)
    elapsed = time.perf_counter() - start
    assert total == expected_map_sum(), total
    return elapsed


def submitit_trivial(scratch: Path, tasks: int) -> Optional[float]:
    """submitit's map_array of ``tasks`` trivial tasks, every result collected: seconds; None without submitit."""
    try:
        import submitit
    except ImportError:
        return None
    import logging

    logging.getLogger("submitit").setLevel(logging.ERROR)
    executor = submitit.AutoExecutor(folder=str(scratch / "submitit-trivial"), cluster="slurm")
    executor.update_parameters(slurm_array_parallelism=tasks, timeout_min=30)
    start = time.perf_counter()
    assert [job.result() for job in executor.map_array(trivial, list(range(tasks)))] == [i + 1 for i in range(tasks)]
    return time.perf_counter() - start


def metered(action: Callable[[], BaseT], tasks: int) -> tuple[BaseT, Meter]:
    """``action()``, and the slurmctld RPCs from before it to SETTLE s after it, as RPCs of ``tasks`` tasks."""
    meter = Meter(config.resolve(None, "slurm", None, {}))
    with meter.window(tasks):
        result = action()
    return result, meter


def rpc_table(tasks: int, found: dict[str, Meter]) -> None:
    """(c)'s RPCs per 1000 tasks, a row per contender: all users', this user's, and the RPC_TYPES."""
    print(f"    slurmctld RPCs per 1000 tasks, sdiag before and {SETTLE:g} s after each (all users' RPCs in the "
          "window count in 'all' and the types; sdiag's own left out)")
    header = ["all", getpass.getuser(), *(t.removeprefix("REQUEST_") for t in RPC_TYPES)]
    print(f"    {'':36}" + "".join(f"{h:>{len(h) + 2}}" for h in header))
    for name, meter in found.items():
        rpcs = meter.rpcs
        if not rpcs.windows:
            print(f"    {name:36}  (not counted: {meter.problem})")
            continue
        cells = [sum(rpcs.types.values()), rpcs.own(meter.user), *(rpcs.types[t] for t in RPC_TYPES)]
        reset = "  (counters reset in the window)" if rpcs.restarts else ""
        print(f"    {name:36}" + "".join(f"{c * 1000 / tasks:>{len(h) + 2}.0f}" for c, h in zip(cells, header))
              + reset)


MapFigure = tuple[float, float, float, dict[str, int]]


def paired(ours: list[float], reference: list[float]) -> str:
    """Median and range of the per-round ratios ours/reference (each round runs every contender once, so a
    burst of load on the shared machine hits both sides of a ratio)."""
    ratios = [a / b for a, b in zip(ours, reference)]
    return f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"


def map_section(scratch: Path, work_dir: str, repeat: int) -> None:
    floors: list[float] = []
    samples: dict[str, list[MapFigure]] = {}
    theirs: list[float] = []
    for _ in range(repeat):
        idle_queue()
        floors.append(raw_map_floor(scratch))
        with ClusterPoolExecutor(backend="slurm", work_dir=work_dir) as ex:
            for label in ("cold", "warm"):
                idle_queue()
                samples.setdefault(label, []).append(measured_map(ex))
        idle_queue()
        seconds = submitit_map(scratch)
        if seconds is not None:
            theirs.append(seconds)

    print(f"\n(d) map(tiny, range({MAP_ITEMS:,})), summed, against the floor, {repeat} rounds: best seconds, and "
          f"the median of the per-round ratios ours/floor (target <= 1.3x); cold = the executor's first map of "
          f"the function (guessed sizes, one array), warm = its second (learned sizes); each from an idle queue")
    print(f"    raw sbatch --array=0-{MAP_ELEMENTS - 1}, {MAP_ELEMENTS} slices   best {min(floors):6.3f} s   "
          f"(rounds: {', '.join(f'{f:.3f}' for f in floors)} s)")
    for name, runs in samples.items():
        seconds = [run[0] for run in runs]
        ratio = statistics.median(a / b for a, b in zip(seconds, floors))
        print(f"    ours, {name:24s}   best {min(seconds):6.3f} s   ratio {paired(seconds, floors)} "
              f"{'MET' if ratio <= 1.3 else 'NOT MET'}   peak RSS <= {max(run[1] for run in runs):.0f} MB "
              f"(+{max(run[2] for run in runs):.0f} MB)   {runs[0][3]}")
    if not theirs:
        print("\n(e) submitit: not installed (pip install submitit), skipped")
        return
    from importlib.metadata import version

    print(f"\n(e) submitit {version('submitit')} map_array over the same {MAP_ELEMENTS} slices, results "
          f"collected, {repeat} rounds (target: ours faster)")
    print(f"    submitit                         best {min(theirs):6.3f} s   "
          f"(rounds: {', '.join(f'{t:.3f}' for t in theirs)} s)")
    for name in ("cold", "warm"):
        seconds = [run[0] for run in samples[name]]
        ratio = statistics.median(a / b for a, b in zip(seconds, theirs))
        print(f"    ours {name} / submitit             {paired(seconds, theirs)} "
              f"{'MET' if ratio < 1 else 'NOT MET'}")


def first_map(work_dir: str) -> tuple[float, float, float, float]:
    """A user's first map: from before ``ClusterPoolExecutor(...)`` to the end of its ``with`` block; and its
    parts: the constructor (the start-up), the map, the end of the ``with`` block (the shutdown)."""
    start = time.perf_counter()
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir) as ex:
        started = time.perf_counter()
        total = sum(ex.map(tiny, range(MAP_ITEMS)))
        mapped = time.perf_counter()
    elapsed = time.perf_counter() - start
    assert total == expected_map_sum(), total
    return elapsed, started - start, mapped - started, start + elapsed - mapped


def interleaved(rounds: int, baseline: Callable[[], BaseT],
                ours: Callable[[], OursT]) -> tuple[list[BaseT], list[OursT]]:
    """``rounds`` runs of each, alternating, each after the queue went idle: load from elsewhere hits both."""
    base: list[BaseT] = []
    mine: list[OursT] = []
    for _ in range(rounds):
        idle_queue()
        base.append(baseline())
        idle_queue()
        mine.append(ours())
    return base, mine


def first_map_section(scratch: Path, work_dir: str, rounds: int) -> None:
    """(g) the first map of a new executor, each round a new executor, interleaved with the floor of (d)."""
    floors, runs = interleaved(rounds, lambda: raw_map_floor(scratch), lambda: first_map(work_dir))
    ours = [run[0] for run in runs]
    ratio = statistics.median(a / b for a, b in zip(ours, floors))
    print(f"\n(g) a user's first map: ClusterPoolExecutor(...) to the end of its with block, map(tiny, "
          f"range({MAP_ITEMS:,})) summed, each round a new executor, against the floor of (d), {rounds} rounds")
    print(f"    floor   rounds {', '.join(f'{f:.3f}' for f in floors)} s")
    print(f"    ours    rounds {', '.join(f'{f:.3f}' for f in ours)} s   ratio {paired(ours, floors)} "
          f"(target <= 1.2x: {'MET' if ratio <= 1.2 else 'NOT MET'})")
    parts = ", ".join(f"{name} {statistics.median(run[i] for run in runs):.3f} s"
                      for i, name in ((1, "start-up (constructor)"), (2, "map"), (3, "shutdown (end of with)")))
    print(f"    ours, medians of the parts: {parts}; the first round's start-up "
          f"{runs[0][1]:.3f} s (the site cache is cold only if no executor ran on this site in the last minutes)")


def cold_burst(work_dir: str, tasks: int) -> tuple[float, int]:
    """``tasks`` trivial submits on a fresh executor, every result collected: seconds, and sbatch calls."""
    start = time.perf_counter()
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir) as ex:
        results = [f.result() for f in [ex.submit(trivial, i) for i in range(tasks)]]
    elapsed = time.perf_counter() - start
    assert results == [i + 1 for i in range(tasks)]
    return elapsed, ex.scheduler_commands.get("sbatch", 0)


def cold_burst_section(scratch: Path, work_dir: str, tasks: int, rounds: int) -> None:
    """(h) a fresh executor's burst of trivial submits against a raw array of as many elements, interleaved."""
    raw, ours = interleaved(rounds, lambda: raw_array(scratch, tasks), lambda: cold_burst(work_dir, tasks))
    seconds = [o[0] for o in ours]
    ratio = statistics.median(a / b for a, b in zip(seconds, raw))
    print(f"\n(h) {tasks} trivial submits on a fresh executor (from before ClusterPoolExecutor(...) to the end of "
          f"its with block, every result collected) against a raw sbatch --array=0-{tasks - 1}, {rounds} rounds")
    print(f"    raw     rounds {', '.join(f'{r:.3f}' for r in raw)} s")
    print(f"    ours    rounds {', '.join(f'{r:.3f}' for r in seconds)} s   ratio {paired(seconds, raw)} "
          f"(target <= 0.3x: {'MET' if ratio <= 0.3 else 'NOT MET'})   sbatch calls "
          f"{', '.join(str(o[1]) for o in ours)} (target <= 5)")


def ssh_options() -> Optional[dict[str, object]]:
    """Options for SLURM over the test sshd (tests/infra/sshd.sh), or None if it is not up."""
    script = Path(__file__).parent.parent / "tests" / "infra" / "sshd.sh"
    if subprocess.run(["bash", str(script), "status"], capture_output=True).returncode != 0:
        return None
    out = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(line.replace("export ", "", 1).split("=", 1) for line in out.splitlines() if "=" in line)
    return {"host": env["CF_SSH_HOST"], "port": int(env["CF_SSH_PORT"]), "username": env["CF_SSH_USER"],
            "client_keys": [env["CF_SSH_KEY"]], "known_hosts": env["CF_SSH_KNOWN_HOSTS"],
            "python": "/usr/bin/python3", "work_dir": "/home/cfuser/cf-bench-runs"}


def packed_run(tasks: int, **options: object) -> float:
    """``tasks`` trivial tasks end to end, packed from durations measured by a 16-task warm-up."""
    with ClusterPoolExecutor(backend="slurm", **options) as ex:  # type: ignore[arg-type]
        [f.result() for f in [ex.submit(trivial, i) for i in range(16)]]
        return timed(lambda: [f.result() for f in [ex.submit(trivial, i) for i in range(tasks)]])


def ssh_section(work_dir: str, tasks: int, rounds: int) -> None:
    options = ssh_options()
    print(f"\n(f) {tasks} trivial tasks over SSH (cfuser@127.0.0.1:2222, one asyncssh connection) against the "
          f"same tasks submitted here, to the same SLURM; packed, {rounds} rounds, medians")
    if options is None:
        print("    skipped: the test sshd is not up (bash tests/infra/sshd.sh up)")
        return
    here = [packed_run(tasks, work_dir=work_dir) for _ in range(rounds)]
    remote = [packed_run(tasks, **options) for _ in range(rounds)]
    ratio = statistics.median(remote) / statistics.median(here)
    print(f"    submitted here   {statistics.median(here):8.3f} s   (rounds {', '.join(f'{x:.2f}' for x in here)})")
    print(f"    over SSH         {statistics.median(remote):8.3f} s   (rounds {', '.join(f'{x:.2f}' for x in remote)})"
          f"   ratio {ratio:.2f}x   (target <= 1.3x: {'MET' if ratio <= 1.3 else 'NOT MET'})")


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="latency samples (median is reported)")
    parser.add_argument("--map-only", action="store_true", help="run only (d) and (e)")
    parser.add_argument("--map-repeat", type=int, default=3, help="rounds of (d) and (e)")
    parser.add_argument("--ssh-only", action="store_true", help="run only (f)")
    parser.add_argument("--first-map-only", action="store_true", help="run only (g)")
    parser.add_argument("--first-map-repeat", type=int, default=5, help="rounds of (g)")
    parser.add_argument("--burst-only", action="store_true", help="run only (h)")
    parser.add_argument("--burst-tasks", type=int, default=200, help="submits in (h)")
    parser.add_argument("--burst-repeat", type=int, default=3, help="rounds of (h)")
    parser.add_argument("--ssh-repeat", type=int, default=3, help="rounds of (f)")
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        sys.exit("no sbatch on PATH: run `bash tests/infra/slurm.sh up` first")
    scratch = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    work_dir = str(scratch / "runs")
    n = args.tasks
    print(f"SLURM on {os.uname().nodename}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
    if args.ssh_only:
        ssh_section(work_dir, n, args.ssh_repeat)
        shutil.rmtree(scratch, ignore_errors=True)
        return
    if args.burst_only:
        cold_burst_section(scratch, work_dir, args.burst_tasks, args.burst_repeat)
        print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
        shutil.rmtree(scratch, ignore_errors=True)
        return
    if args.first_map_only:
        first_map_section(scratch, work_dir, args.first_map_repeat)
        print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
        shutil.rmtree(scratch, ignore_errors=True)
        return
    if args.map_only:
        map_section(scratch, work_dir, args.map_repeat)
        print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
        shutil.rmtree(scratch, ignore_errors=True)
        return

    raw_latencies = [raw_single(scratch) for _ in range(args.repeat)]
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir) as ex:
        ours_latencies = [timed(lambda: ex.submit(trivial, 1).result()) for _ in range(args.repeat)]
    raw_latency, ours_latency = statistics.median(raw_latencies), statistics.median(ours_latencies)

    raw_time, raw_rpcs = metered(lambda: raw_array(scratch, n), n)
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir, tasks_per_element=1) as ex:
        one_per_element, one_rpcs = metered(
            lambda: timed(lambda: [f.result() for f in [ex.submit(trivial, i) for i in range(n)]]), n)
        one_commands = ex.scheduler_commands
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir) as ex:
        [f.result() for f in [ex.submit(trivial, i) for i in range(16)]]  # measures task durations
        before = ex.scheduler_commands
        packed, packed_rpcs = metered(lambda: timed(lambda: [f.result() for f in [ex.submit(trivial, i)
                                                                                   for i in range(n)]]), n)
        packed_commands = {k: v - before.get(k, 0) for k, v in ex.scheduler_commands.items()}
    theirs, their_rpcs = metered(lambda: submitit_trivial(scratch, n), n)

    print(f"\n(a) one trivial task, submit -> result (median of {args.repeat})")
    print(f"    raw sbatch --wrap + 50 ms polling   {raw_latency:8.3f} s")
    print(f"    ClusterPoolExecutor                 {ours_latency:8.3f} s   "
          f"ours - raw = {ours_latency - raw_latency:+.3f} s"
          f"   (target <= +0.3 s: {'MET' if ours_latency - raw_latency <= 0.3 else 'NOT MET'})")
    print(f"\n(b) {n} trivial tasks, end to end")
    print(f"    raw sbatch --array=0-{n - 1}           {raw_time:8.3f} s")
    print(f"    ours, 1 task per element            {one_per_element:8.3f} s   ratio {one_per_element / raw_time:.2f}x"
          f"   (target <= 1.2x: {'MET' if one_per_element / raw_time <= 1.2 else 'NOT MET'})")
    print(f"    ours, packed from measured times     {packed:8.3f} s   ratio {packed / raw_time:.2f}x")
    print(f"    submitit map_array                  {theirs:8.3f} s   ratio {theirs / raw_time:.2f}x" if theirs
          else "    submitit: not installed (pip install submitit), skipped")
    print(f"\n(c) scheduler commands for {n} tasks")
    print(f"    1 task per element: {one_commands}")
    print(f"    packed:             {packed_commands}")
    rpc_table(n, {f"raw sbatch --array=0-{n - 1}": raw_rpcs, "ours, 1 task per element": one_rpcs,
                  "ours, packed from measured times": packed_rpcs,
                  **({"submitit map_array": their_rpcs} if theirs else {})})
    map_section(scratch, work_dir, args.map_repeat)
    first_map_section(scratch, work_dir, args.first_map_repeat)
    cold_burst_section(scratch, work_dir, args.burst_tasks, args.burst_repeat)
    ssh_section(work_dir, n, args.ssh_repeat)
    print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
