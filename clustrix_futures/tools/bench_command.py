"""``clustrix-futures bench``: the command-line face of :mod:`clustrix_futures.tools.bench`.

``--function MODULE:FUNC`` is imported as ``python -m`` would import it: the current directory comes first on
``sys.path``, so a ``mymod.py`` beside the shell's working directory is found. The comparison needs a cluster:
``--backend local`` (or a profile whose backend is local) would compare local processes with themselves, and is
refused. On SLURM the cluster runs' slurmctld RPCs are counted too (``sdiag`` before and after each, through the
cluster's own transport) and printed per 1000 tasks under the table; an ``sdiag`` that fails is one line there.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from clustrix_futures.config import PROFILE_ENV
from clustrix_futures.errors import ClusterFuturesError
from clustrix_futures.tools import bench
from clustrix_futures.tools.subcommand import Subparsers, add_site_options, fail, progress, site_options


def _durations(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive seconds separated by commas, not {text!r}")
    return values


def add_bench(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="compare local processes with a cluster on a workload; find the crossover task duration",
        description="Run a workload end to end (executor start, map with the default chunksize, every result, "
                    "shutdown) on local processes and on a cluster; print throughput, per-task overhead and the "
                    "task duration above which the cluster wins. On SLURM, also the RPCs the cluster runs cost "
                    "slurmctld per 1000 tasks (sdiag before and after each run).")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--function", metavar="MODULE:FUNC",
                      help="a function of one argument, importable from the current directory or installed")
    what.add_argument("--synthetic", action="store_true", help="the built-in task that takes --task-seconds")
    parser.add_argument("--range", metavar="N|START:STOP[:STEP]", help="the inputs of --function")
    parser.add_argument("--task-seconds", type=_durations, default=[0.0001, 0.001, 0.01, 0.1, 0.5],
                        metavar="S,S,...", help="synthetic task durations (default: 0.0001,0.001,0.01,0.1,0.5)")
    parser.add_argument("--busy", action="store_true",
                        help="synthetic tasks spin on a CPU instead of sleeping (CPU-bound work)")
    sizing = parser.add_mutually_exclusive_group()
    sizing.add_argument("--tasks", type=int, help="synthetic tasks per duration (default 100)")
    sizing.add_argument("--run-seconds", type=float,
                        help="instead of --tasks: at each duration, enough tasks to keep the local workers busy "
                             "about this long")
    add_site_options(parser)
    parser.add_argument("--local-workers", type=int, help="local processes (default: the CPU count)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best counts (default 1)")
    parser.add_argument("--plot", metavar="OUT.png", help="draw throughput against task duration (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run_bench_command)


def _argument_problem(args: argparse.Namespace) -> str:
    """What is missing or cannot work in the arguments, before anything runs ("" when nothing)."""
    if args.function and not args.range:
        return "--function needs --range N or --range START:STOP"
    if not (args.profile or args.backend or os.environ.get(PROFILE_ENV)):
        return ("name the cluster to compare with: --profile P, or --backend B (with --work-dir D "
                "and --option KEY=VALUE as needed)")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return f"--plot needs matplotlib, which is not installed: {bench.PLOT_HINT}"
    return ""


def _workloads(args: argparse.Namespace) -> list[bench.Workload]:
    if not args.function:
        return bench.synthetic_workloads(args.task_seconds, tasks=args.tasks, run_seconds=args.run_seconds,
                                         busy=args.busy, local_workers=args.local_workers)
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:  # as `python -m` puts it; a console script does not
        sys.path.insert(0, here)
    return [bench.function_workload(args.function, bench.parse_range(args.range))]


def run_bench_command(args: argparse.Namespace) -> int:
    problem = _argument_problem(args)
    if problem:
        return fail(problem)
    cluster = site_options(args)
    for key, value in (("profile", args.profile), ("backend", args.backend)):
        if value is not None:
            cluster[key] = value
    log: Callable[[str], None] | None = None if args.quiet else progress
    try:
        result = bench.run_bench(_workloads(args), cluster, local_workers=args.local_workers, repeat=args.repeat,
                                 log=log, count_rpcs=True)
    except (ValueError, ImportError, ClusterFuturesError) as exc:
        return fail(str(exc))
    print(bench.format_table(result))
    if args.plot:
        bench.plot(result, args.plot)
        print(f"plot: {args.plot}")
    return 0
