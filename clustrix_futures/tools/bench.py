"""Does the cluster beat local processes for a workload? The Python API behind ``clustrix-futures bench``.

A *run* is measured end to end, as a user lives it: create the executor, ``map`` the function over the inputs
with the default chunksize (so map's packing is exercised), consume every result, shut down. The same
workload runs on local processes (``ClusterPoolExecutor(N)``) and on the cluster (a profile or a backend and
its options); the best of ``repeat`` runs counts.

A workload is an importable function over a range, or the built-in synthetic task that takes a set time
(:func:`synthetic_task`), swept over several durations to find the *crossover*: the task duration above which
the cluster's throughput beats the local one.

On SLURM, ``run_bench(..., count_rpcs=True)`` (as ``clustrix-futures bench`` does) also reads ``sdiag`` before
and after each cluster run, through the cluster's own transport: the RPCs the cluster runs cost slurmctld, per
1000 tasks, printed under the table (:mod:`clustrix_futures.tools.sdiag`; an ``sdiag`` that fails is one line
there, never a failed bench).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import cloudpickle

from clustrix_futures import config
from clustrix_futures.executor import ClusterPoolExecutor
from clustrix_futures.tools.sdiag import Meter

PLOT_HINT = "pip install 'clustrix-futures[plot]'"
DEFAULT_TASKS = 100  # synthetic tasks per duration: the same count at every duration
MIN_TASKS, MAX_TASKS = 32, 100_000  # synthetic task counts, when sized from run_seconds instead
LOCAL_WITH_LOCAL = ("bench compares local processes with a cluster, and the cluster selected here is the local "
                    "backend: that would compare local processes with themselves. Name a cluster: --profile P "
                    "(whose backend is not local) or --backend slurm|sge|pbs|ssh|kubernetes")
OVERHEAD_DEFINITION = ("overhead/task = (wall - tasks x task_s / P) / tasks: the wall time per task beyond "
                       "perfectly parallel work on P slots")


# A compute node has only the worker's code (engine.startup.NODE_CLOSURE), not this module: what a bench sends
# from here (the synthetic task) travels by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def synthetic_task(x: int, seconds: float, busy: bool = False) -> int:
    """Take ``seconds`` and return ``x``: sleep most of it (or spin all of it with ``busy``), spin to the end."""
    end = time.perf_counter() + seconds
    if not busy and seconds > 0.002:
        time.sleep(seconds - 0.001)
    while time.perf_counter() < end:
        pass
    return x


@dataclass
class Workload:
    label: str
    fn: Callable[..., Any]
    items: Sequence[Any]
    task_seconds: float  # nominal (synthetic), or measured in this process (a function)


@dataclass
class Row:
    workload: str
    task_seconds: float
    tasks: int
    local_seconds: float
    cluster_seconds: float
    local_slots: int
    cluster_slots: int

    @property
    def local_rate(self) -> float:
        return self.tasks / self.local_seconds

    @property
    def cluster_rate(self) -> float:
        return self.tasks / self.cluster_seconds

    def overhead(self, wall: float, slots: int) -> float:
        """Seconds per task beyond perfectly parallel work on ``slots`` (see :data:`OVERHEAD_DEFINITION`)."""
        return (wall - self.tasks * self.task_seconds / slots) / self.tasks


@dataclass
class BenchResult:
    rows: list[Row]
    cluster_label: str
    crossover: Optional[float]  # task seconds above which the cluster wins; None: see note
    crossover_note: str
    rpcs: Optional[Meter] = None  # the cluster runs' slurmctld RPCs, when counted


def parse_range(text: str) -> range:
    """``N``, ``START:STOP`` or ``START:STOP:STEP``."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"a range is N, START:STOP or START:STOP:STEP (integers), not {text!r}")
    result = range(*parts)
    if len(result) == 0:
        raise ValueError(f"the range {text!r} is empty")
    return result


def load_function(spec: str) -> Callable[..., Any]:
    """``package.module:function`` (the attribute may be dotted, e.g. ``module:Class.method``)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"a function is given as package.module:function, not {spec!r}")
    target: Any = importlib.import_module(module_name)
    for name in attribute.split("."):
        target = getattr(target, name, None)
        if target is None:
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}")
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return target


def function_workload(spec: str, items: range, sample_seconds: float = 1.0) -> Workload:
    """An importable function over ``items``; its task duration is the mean of serial calls here on the first
    items (up to ``sample_seconds`` or 100 items)."""
    fn = load_function(spec)
    start, calls = time.perf_counter(), 0
    for item in items[:100]:
        fn(item)
        calls += 1
        if time.perf_counter() - start >= sample_seconds:
            break
    return Workload(spec, fn, items, (time.perf_counter() - start) / calls)


def synthetic_workloads(durations: Sequence[float], *, tasks: Optional[int] = None,
                        run_seconds: Optional[float] = None, busy: bool = False,
                        local_workers: Optional[int] = None) -> list[Workload]:
    """One synthetic workload per duration, of ``tasks`` tasks (default 100) each, so the crossover answers
    "for this many tasks, from what task duration on does the cluster pay off?". With ``run_seconds`` instead,
    each duration gets enough tasks to keep the local workers busy about that long (32 to 100,000 tasks)."""
    workers = local_workers or os.cpu_count() or 1
    if tasks is not None and tasks < 1:
        raise ValueError(f"tasks must be a positive integer, not {tasks!r}")
    made = []
    for seconds in sorted(durations):
        if seconds <= 0:
            raise ValueError(f"task durations must be positive, not {seconds!r}")
        count = tasks or DEFAULT_TASKS
        if tasks is None and run_seconds is not None:
            count = max(MIN_TASKS, min(MAX_TASKS, math.ceil(run_seconds * workers / seconds)))
        fn = functools.partial(synthetic_task, seconds=seconds, busy=busy)
        made.append(Workload(f"{'busy' if busy else 'sleep'} {seconds:g} s", fn, range(count), seconds))
    return made


def _slots(settings: config.Settings) -> int:
    """The tasks a cluster executor runs at once in a map: the elements a map keeps in parallel."""
    from clustrix_futures.mapping.sizing import MIN_MAP_CHUNKS

    return settings.max_workers or MIN_MAP_CHUNKS


def _timed_run(make: Callable[[], ClusterPoolExecutor], workload: Workload) -> float:
    start = time.perf_counter()
    with make() as executor:
        count = sum(1 for _ in executor.map(workload.fn, workload.items))
    wall = time.perf_counter() - start
    if count != len(workload.items):
        raise RuntimeError(f"{workload.label}: {count} results for {len(workload.items)} items")
    return wall


def _measured_run(make: Callable[[], ClusterPoolExecutor], workload: Workload, meter: Optional[Meter]) -> float:
    """One timed run; with a meter, inside one of its windows (the readings are outside the timed part)."""
    if meter is None:
        return _timed_run(make, workload)
    with meter.window(len(workload.items)):
        return _timed_run(make, workload)


def run_bench(workloads: Sequence[Workload], cluster: Mapping[str, Any], *, local_workers: Optional[int] = None,
              repeat: int = 1, log: Optional[Callable[[str], None]] = None, count_rpcs: bool = False) -> BenchResult:
    """Run every workload on local processes and on ``cluster`` (keyword arguments of
    :class:`ClusterPoolExecutor`: ``profile``, ``backend``, ``max_workers`` and options), best of ``repeat``.
    With ``count_rpcs`` and a SLURM cluster, every cluster run's slurmctld RPCs are counted (``result.rpcs``).

    A ``cluster`` that resolves to the local backend is refused with ``ValueError`` (:data:`LOCAL_WITH_LOCAL`)."""
    cluster = dict(cluster)
    profile = cluster.pop("profile", None)
    settings = config.resolve(profile, cluster.pop("backend", None),
                              cluster.pop("max_workers", None), cluster)  # a ConfigError comes before any run
    if settings.backend == "local":
        raise ValueError(LOCAL_WITH_LOCAL)
    workers = local_workers or os.cpu_count() or 1
    cluster_slots = _slots(settings)
    meter = Meter(settings) if count_rpcs and settings.backend == "slurm" else None

    def make_local() -> ClusterPoolExecutor:
        return ClusterPoolExecutor(workers, backend="local")

    def make_cluster() -> ClusterPoolExecutor:
        return ClusterPoolExecutor(settings.max_workers, backend=settings.backend, profile=profile,
                                   **settings.options)

    rows = []
    for workload in workloads:
        walls = {}
        for side, make, counted in (("local", make_local, None), ("cluster", make_cluster, meter)):
            walls[side] = min(_measured_run(make, workload, counted) for _ in range(max(1, repeat)))
            if log:
                log(f"{workload.label}: {len(workload.items)} tasks on {side}: {walls[side]:.3f} s")
        rows.append(Row(workload.label, workload.task_seconds, len(workload.items), walls["local"],
                        walls["cluster"], workers, cluster_slots))
    label = f"profile {profile} ({settings.backend})" if profile else settings.backend
    crossover, note = find_crossover(rows)
    return BenchResult(rows, label, crossover, note, meter)


def find_crossover(rows: Sequence[Row]) -> tuple[Optional[float], str]:
    """The task duration above which the cluster's throughput beats the local one, interpolated (log-log)
    between the two measured durations around the last change from local-faster to cluster-faster."""
    points = sorted((r.task_seconds, r.cluster_rate / r.local_rate) for r in rows if r.task_seconds > 0)
    if len(points) < 2:
        return None, "needs at least two task durations (use --synthetic with several --task-seconds)"
    losing = [i for i, (_, ratio) in enumerate(points) if ratio <= 1]
    low, high = points[0][0], points[-1][0]
    if not losing:
        return None, f"the cluster always wins in the measured range ({low:g} to {high:g} s per task)"
    last = losing[-1]
    if last == len(points) - 1:
        return None, f"the cluster never wins in the measured range ({low:g} to {high:g} s per task)"
    (d1, r1), (d2, r2) = points[last], points[last + 1]
    fraction = -math.log(r1) / (math.log(r2) - math.log(r1))
    crossover = math.exp(math.log(d1) + fraction * (math.log(d2) - math.log(d1)))
    note = f"interpolated between {d1:g} s and {d2:g} s per task"
    if len(losing) != last + 1:
        note += " (the cluster also won at some shorter durations: noisy or non-monotonic)"
    return crossover, note


def format_table(result: BenchResult) -> str:
    header = ("workload", "task s", "tasks", "local s", "cluster s", "local tasks/s", "cluster tasks/s",
              "local ovh ms/task", "cluster ovh ms/task", "faster")
    lines = []
    for r in result.rows:
        lines.append((r.workload, f"{r.task_seconds:.3g}", f"{r.tasks:,}", f"{r.local_seconds:.3f}",
                      f"{r.cluster_seconds:.3f}", f"{r.local_rate:,.1f}", f"{r.cluster_rate:,.1f}",
                      f"{r.overhead(r.local_seconds, r.local_slots) * 1e3:.3g}",
                      f"{r.overhead(r.cluster_seconds, r.cluster_slots) * 1e3:.3g}",
                      "cluster" if r.cluster_rate > r.local_rate else "local"))
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    first = result.rows[0] if result.rows else None
    slots = (f"P = {first.local_slots} local workers, {first.cluster_slots} cluster map elements in parallel"
             if first else "")
    out = [render(header), render(["-" * w for w in widths]), *(render(row) for row in lines), "",
           f"cluster: {result.cluster_label}; wall = executor start + map (default chunksize) + every result + "
           "shutdown, best run",
           f"{OVERHEAD_DEFINITION}; {slots}",
           "crossover: " + (f"{result.crossover:.3g} s per task: the cluster wins above it "
                            f"({result.crossover_note})" if result.crossover is not None else
                            result.crossover_note)]
    if result.rpcs is not None:
        out += ["", result.rpcs.format()]
    return "\n".join(out)


def plot(result: BenchResult, path: str) -> None:
    """Throughput against task duration for both sides (log axes), the crossover marked, written to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plotting needs matplotlib, which is not installed: {PLOT_HINT}") from exc
    rows = sorted(result.rows, key=lambda r: r.task_seconds)
    durations = [r.task_seconds for r in rows]
    figure, axes = plt.subplots(figsize=(8, 6), dpi=120)
    for name, rates, slots, style in (
            ("local processes", [r.local_rate for r in rows], rows[0].local_slots, "o-"),
            (f"cluster ({result.cluster_label})", [r.cluster_rate for r in rows], rows[0].cluster_slots, "s-")):
        line, = axes.plot(durations, rates, style, label=f"{name}, measured")
        axes.plot(durations, [slots / d for d in durations], ":", color=line.get_color(),
                  label=f"{name}, ideal ({slots} slots / task duration)")
    if result.crossover is not None:
        axes.axvline(result.crossover, color="grey", linestyle="--",
                     label=f"crossover: {result.crossover:.3g} s per task")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("task duration (seconds per task)")
    axes.set_ylabel("throughput (tasks per second)")
    tasks = sorted({r.tasks for r in rows})
    count = f"{tasks[0]:,}" if len(tasks) == 1 else f"{tasks[0]:,} to {tasks[-1]:,}"
    axes.set_title("Local processes vs cluster: end-to-end throughput by task duration\n"
                   f"({count} tasks per point; "
                   + (f"the cluster wins above {result.crossover:.3g} s)" if result.crossover is not None
                      else result.crossover_note.split(" (")[0] + ")"), fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
