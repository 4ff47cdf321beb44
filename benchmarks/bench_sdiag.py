"""The load each way of running 1000 tasks puts on slurmctld: RPCs counted by ``sdiag``, before and after.

Run: ``python benchmarks/bench_sdiag.py`` (``--tasks N`` changes the 1000; ``--settle S`` the seconds waited
after the last result before the second ``sdiag``, for the elements' completion RPCs to arrive).

Contenders, each running N trivial tasks (``x + 1``) with every result collected:

* ours, packed: ``ex.map(trivial, range(N))``, the executor's defaults;
* ours, one task per element: ``tasks_per_element=1`` and N ``submit`` calls;
* raw ``sbatch --array=0-(N-1)`` whose elements each write a pickle, the client polling the files (it asks the
  controller nothing after ``sbatch``: the floor);
* submitit's ``map_array`` (``AutoExecutor``, ``slurm_array_parallelism=N``), when submitit is installed.

For each, ``sdiag``'s "Remote Procedure Call statistics by message type" (every user's) and "by user" (this
user's line) are read every 2 s from before it starts to ``--settle`` s after its last result, the differences
summed (a restart of slurmctld sets its counters back to 0: the sums carry on from there, losing at most one
interval's RPCs, and the table says how many restarts a window saw) and scaled to per 1000 tasks. ``sdiag``
itself costs one RPC (REQUEST_STATS_INFO) a call; it is left out. The parsing and the differences are
``clustrix_futures.tools.sdiag``'s, the same as ``clustrix-futures bench`` prints. The controller is shared:
RPCs of other users (and other clients of this user) in the same window count too, so an idle window is
measured first and printed as the background. A contender that fails (someone else cancelled its jobs...)
says so and is run again, up to ATTEMPTS times.
"""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from clustrix_futures import ClusterPoolExecutor
from clustrix_futures.tools.sdiag import SDIAG_ARGV, Reading, Rpcs, parse_sdiag

WRITE_PICKLE = ("import pickle, os, sys; p = sys.argv[1]; open(p + '.tmp', 'wb').write(pickle.dumps(42)); "
                "os.replace(p + '.tmp', p)")
SHOWN_TYPES = ("REQUEST_SUBMIT_BATCH_JOB", "REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_FED_INFO",
               "REQUEST_PARTITION_INFO", "REQUEST_COMPLETE_BATCH_SCRIPT", "MESSAGE_EPILOG_COMPLETE")
SAMPLE = 2.0  # seconds between two sdiag calls
ATTEMPTS = 3


def trivial(x: int) -> int:
    return x + 1


def sdiag() -> Reading:
    """RPC counts by message type and by user, as sdiag prints them now."""
    return parse_sdiag(subprocess.run(SDIAG_ARGV, capture_output=True, text=True, check=True).stdout)


class Sampler:
    """sdiag read every SAMPLE seconds in a thread, the differences summed in ``rpcs``: a restart of slurmctld
    (its counters back to 0) loses at most the RPCs of one interval, and is counted in ``rpcs.restarts``."""

    def __init__(self) -> None:
        self.rpcs = Rpcs()
        self._last = _first_sdiag()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE):
            self.sample()

    def sample(self) -> None:
        try:
            now = sdiag()
        except subprocess.CalledProcessError:  # the controller is down: the next sample catches up
            return
        self.rpcs.add(self._last, now)
        self._last = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _first_sdiag() -> Reading:
    """sdiag, once the controller answers (it may be restarting): within a minute."""
    for _ in range(60):
        try:
            return sdiag()
        except subprocess.CalledProcessError:
            time.sleep(1)
    return sdiag()


def measured(run: Callable[[], None], settle: float) -> tuple[float, Sampler]:
    """Seconds the contender took, and the RPCs by type and by user from before it to ``settle`` s after."""
    sampler = Sampler()
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    time.sleep(settle)
    sampler.stop()
    return elapsed, sampler


def ours_packed(work_dir: str, tasks: int) -> None:
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir) as ex:
        assert sum(ex.map(trivial, range(tasks))) == sum(range(tasks)) + tasks


def ours_one_per_element(work_dir: str, tasks: int) -> None:
    with ClusterPoolExecutor(backend="slurm", work_dir=work_dir, tasks_per_element=1) as ex:
        futures = [ex.submit(trivial, x) for x in range(tasks)]
        assert sum(f.result() for f in futures) == sum(range(tasks)) + tasks


def raw_array(scratch: Path, tasks: int) -> None:
    directory = Path(tempfile.mkdtemp(dir=scratch, prefix="array-"))
    subprocess.run(["sbatch", "--parsable", f"--array=0-{tasks - 1}", f"--output={directory}/%a.log",
                    f"--wrap={sys.executable} -c \"{WRITE_PICKLE}\" {directory}/$SLURM_ARRAY_TASK_ID.pkl"],
                   check=True, capture_output=True)
    pending = [directory / f"{i}.pkl" for i in range(tasks)]
    while pending:
        pending = [p for p in pending if not p.exists()]
        time.sleep(0.25)


def submitit_map(scratch: Path, tasks: int) -> None:
    import logging

    import submitit

    logging.getLogger("submitit").setLevel(logging.ERROR)  # it warns on every sacct call (no accounting here)
    executor = submitit.AutoExecutor(folder=str(scratch / "submitit"), cluster="slurm")
    executor.update_parameters(slurm_array_parallelism=tasks, timeout_min=30)
    jobs = executor.map_array(trivial, list(range(tasks)))
    assert sum(job.result() for job in jobs) == sum(range(tasks)) + tasks


def contenders(scratch: Path, tasks: int) -> dict[str, Callable[[], None]]:
    found = {"ours, packed (map)": lambda: ours_packed(str(scratch / "runs"), tasks),
             "ours, one task per element": lambda: ours_one_per_element(str(scratch / "runs"), tasks),
             "raw sbatch --array": lambda: raw_array(scratch, tasks)}
    try:
        import submitit  # noqa: F401
    except ImportError:
        print("submitit is not installed: pip install submitit to compare it")
    else:
        found["submitit map_array"] = lambda: submitit_map(scratch, tasks)
    return found


def row(name: str, elapsed: float, found: Sampler, per: float) -> str:
    types, mine = found.rpcs.types, found.rpcs.own(getpass.getuser())  # less sdiag's own calls
    restarts = f" ({found.rpcs.restarts} slurmctld restart(s))" if found.rpcs.restarts else ""
    cells = [name + restarts, f"{elapsed:.1f} s", f"{sum(types.values()) * per:.0f}", f"{mine * per:.0f}",
             *(f"{types[t] * per:.0f}" for t in SHOWN_TYPES)]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--background", type=float, default=30.0, help="seconds of the idle window")
    args = parser.parse_args()
    per = 1000 / args.tasks
    print(f"load average {os.getloadavg()[0]:.2f}; user {getpass.getuser()}; {args.tasks} tasks; RPCs per 1000 tasks")
    header = ["contender", "time", "RPCs (all users)", f"RPCs ({getpass.getuser()})", *SHOWN_TYPES]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    elapsed, found = measured(lambda: time.sleep(args.background), args.settle)
    print(row(f"background: idle {args.background:.0f} s", elapsed, found, per), flush=True)
    others: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="bench-sdiag-") as scratch:
        for name, run in contenders(Path(scratch), args.tasks).items():
            for attempt in range(ATTEMPTS):
                try:
                    elapsed, found = measured(run, args.settle)
                except Exception as exc:
                    print(f"    ({name} failed, attempt {attempt + 1}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0]})", flush=True)
                    continue
                print(row(name, elapsed, found, per), flush=True)
                others.update(found.rpcs.types)
                break
    unshown = Counter({t: n for t, n in others.items() if t not in SHOWN_TYPES})
    print(f"other message types, all contenders together (raw counts): {dict(unshown.most_common(12))}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
