"""The ``clustrix-futures`` command. One subcommand per ``add_*`` function in :data:`SUBCOMMANDS`.

To add one (``doctor``, ``status``...): write ``add_NAME(subparsers)`` that calls ``subparsers.add_parser`` and
sets ``handler=`` (a function of the parsed arguments returning the exit status), and append it to
:data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, Callable, Optional

from clustrix_futures.config import PROFILE_ENV
from clustrix_futures.errors import ClusterFuturesError

Subparsers = Any  # argparse's _SubParsersAction, which is private


def _durations(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive seconds separated by commas, not {text!r}")
    return values


def _option(text: str) -> tuple[str, Any]:
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return name.strip(), yaml.safe_load(value) if value else value  # 2 -> int, true -> bool, [a, b] -> list


def add_bench(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="compare local processes with a cluster on a workload; find the crossover task duration",
        description="Run a workload end to end (executor start, map with the default chunksize, every result, "
                    "shutdown) on local processes and on a cluster; print throughput, per-task overhead and the "
                    "task duration above which the cluster wins.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--function", metavar="MODULE:FUNC", help="an importable function of one argument")
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
    parser.add_argument("--profile", help="the cluster: a profile from the configuration file")
    parser.add_argument("--backend", help="the cluster: a backend (slurm, ssh...)")
    parser.add_argument("--work-dir", help="the backend's work_dir option")
    parser.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                        help="another executor option for the cluster (repeatable; values read as YAML)")
    parser.add_argument("--local-workers", type=int, help="local processes (default: the CPU count)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best counts (default 1)")
    parser.add_argument("--plot", metavar="OUT.png", help="draw throughput against task duration (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from clustrix_futures import bench

    if args.function and not args.range:
        return _fail("--function needs --range N or --range START:STOP")
    if not (args.profile or args.backend or os.environ.get(PROFILE_ENV)):
        return _fail("name the cluster to compare with: --profile P, or --backend B (with --work-dir D "
                     "and --option KEY=VALUE as needed)")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail(f"--plot needs matplotlib, which is not installed: {bench.PLOT_HINT}")
    cluster: dict[str, Any] = dict(args.option)
    for key, value in (("profile", args.profile), ("backend", args.backend), ("work_dir", args.work_dir)):
        if value is not None:
            cluster[key] = value
    try:
        if args.function:
            workloads = [bench.function_workload(args.function, bench.parse_range(args.range))]
        else:
            workloads = bench.synthetic_workloads(args.task_seconds, tasks=args.tasks, run_seconds=args.run_seconds,
                                                  busy=args.busy, local_workers=args.local_workers)
        log: Optional[Callable[[str], None]] = None if args.quiet else _progress
        result = bench.run_bench(workloads, cluster, local_workers=args.local_workers, repeat=args.repeat, log=log)
    except (ValueError, ImportError, ClusterFuturesError) as exc:
        return _fail(str(exc))
    print(bench.format_table(result))
    if args.plot:
        bench.plot(result, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"clustrix-futures: error: {message}", file=sys.stderr)
    return 2


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clustrix-futures",
                                     description="Tools for clustrix-futures executors.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
