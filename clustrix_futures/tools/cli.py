"""The ``clustrix-futures`` command. One subcommand per ``add_*`` function in :data:`SUBCOMMANDS`.

To add one (``doctor``, ``status``...): write ``add_NAME(subparsers)`` that calls ``subparsers.add_parser`` and
sets ``handler=`` (a function of the parsed arguments returning the exit status), and append it to
:data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, Optional

from clustrix_futures import config
from clustrix_futures.config import PROFILE_ENV
from clustrix_futures.errors import ClusterFuturesError
from clustrix_futures.schedulers import capabilities
from clustrix_futures.schedulers.base import QUEUED, RUNNING
from clustrix_futures.tools.nodes import NODES_ARGV, Node, parse_nodes, partitions
from clustrix_futures.tools.runs import RAISED, SUCCEEDED, Site, Snapshot, age, format_counts, parse_age

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
    _add_site_options(parser)
    parser.add_argument("--local-workers", type=int, help="local processes (default: the CPU count)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best counts (default 1)")
    parser.add_argument("--plot", metavar="OUT.png", help="draw throughput against task duration (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from clustrix_futures.tools import bench

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
    cluster = _site_options(args)
    for key, value in (("profile", args.profile), ("backend", args.backend)):
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


def _add_site_options(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """Which cluster: a profile, or options. A run directory's own manifest supplies its backend."""
    parser.add_argument("--profile", help=f"a profile from the configuration file (default: ${PROFILE_ENV})")
    if backend:
        parser.add_argument("--backend", help="the backend, when no profile names it")
    parser.add_argument("--host", help="SSH host of the cluster (a ~/.ssh/config alias works)")
    parser.add_argument("--work-dir", help="the work_dir option: where run directories are made")
    parser.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                        help="another option (repeatable; values read as YAML)")


def _site_options(args: argparse.Namespace) -> dict[str, Any]:
    """The executor options of ``_add_site_options``' flags: each --option, then --host and --work-dir."""
    options: dict[str, Any] = dict(args.option)
    for key, value in (("host", args.host), ("work_dir", args.work_dir)):
        if value is not None:
            options[key] = value
    return options


def _site_settings(args: argparse.Namespace) -> config.Settings:
    return config.resolve(args.profile, getattr(args, "backend", None), None, _site_options(args))


def _with_site(args: argparse.Namespace, work: Callable[[Site], Awaitable[int]]) -> int:
    """Run ``work`` with the cluster's transport open; configuration problems become an error message."""
    async def main() -> int:
        async with Site(_site_settings(args)) as site:
            return await work(site)

    try:
        return asyncio.run(main())
    except (ClusterFuturesError, ValueError) as exc:
        return _fail(str(exc))
    except Exception as exc:  # an unreachable S3 endpoint, a run directory that is not ours...: say so, briefly
        return _fail(f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- doctor


def add_doctor(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check that a profile works, and say how to fix what does not",
        description="Check the configuration, the SSH connection and host key, the remote interpreter and its "
                    "version, the scheduler, work_dir, the resources (SLURM: sbatch --test-only), then run one "
                    "tiny job and time it. Exit status 1 if a check failed.")
    _add_site_options(parser)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the test job's result (default 300)")
    parser.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from clustrix_futures.tools.doctor import Doctor, format_checks

    doctor = Doctor(args.profile, args.backend, _site_options(args), args.timeout)
    print(format_checks(doctor.run()))
    return 0 if doctor.healthy else 1


# ---------------------------------------------------------------- run directories


def add_status(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "status", help="tasks of a run by state; without RUN_DIR, every run in work_dir",
        description="Read a run directory (made by any client, alive or not) and ask the scheduler once: how "
                    "many tasks succeeded, raised, run, wait, were cancelled or failed, and why. Nothing is taken "
                    "over or resubmitted. RUN_DIR is a path, or a run's name under work_dir.")
    parser.add_argument("run", nargs="?", metavar="RUN_DIR")
    parser.add_argument("--tasks", action="store_true", help="list every task, not only those that did not "
                                                             "succeed")
    parser.add_argument("--json", action="store_true", help="print JSON")
    _add_site_options(parser, backend=False)
    parser.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        if args.run is None:
            return await _list_runs(site, args.json)
        snapshot = await (await site.open(await site.locate(args.run))).snapshot()
        if args.json:
            print(json.dumps(snapshot.as_json(), indent=1))
            return 0
        print(_describe_run(snapshot))
        shown = [t for t in snapshot.tasks if args.tasks or t.state not in (SUCCEEDED, QUEUED, RUNNING)]
        limit = len(shown) if args.tasks else 20
        if shown:
            rows = [[str(t.task_id), t.element, t.state, t.detail] for t in shown[:limit]]
            print()
            print("\n".join(_table(["TASK", "ELEMENT", "STATE", "DETAIL"], rows)))
            if len(shown) > limit:
                print(f"... {len(shown) - limit} more (--tasks lists every task)")
        return 0

    return _with_site(args, work)


async def _list_runs(site: Site, as_json: bool) -> int:
    found = await site.snapshots(await site.runs())
    snapshots = [s for s in found if isinstance(s, Snapshot)]
    for problem in found:
        if not isinstance(problem, Snapshot):
            print(f"clustrix-futures: {problem}", file=sys.stderr)
    if as_json:
        print(json.dumps([{k: v for k, v in s.as_json().items() if k != "tasks"} for s in snapshots], indent=1))
        return 0
    if not snapshots:
        print(f"no runs in {await site.work_dir()} on {site.where()}")
        return 0
    rows = [[s.run.root.rsplit("/", 1)[-1], s.run.backend, _when(s.run.manifest), _liveness(s),
             f"{len(s.tasks)}: {format_counts(s.counts())}"] for s in snapshots]
    print(f"runs in {await site.work_dir()} on {site.where()}:")
    print("\n".join(_table(["RUN", "BACKEND", "CREATED", "JOBS", "TASKS"], rows)))
    return 0


def _describe_run(snapshot: Snapshot) -> str:
    run = snapshot.run
    client = f"pid {run.manifest.get('pid')} on {run.manifest.get('client')}"
    alive = " (still running)" if run.client_alive() else ""
    return (f"run {run.root}: {run.backend}, created {_when(run.manifest)} by {client}{alive}\n"
            f"{len(snapshot.tasks)} tasks: {format_counts(snapshot.counts())}\n"
            f"elements queued or running: {len(snapshot.live)}")


def _liveness(snapshot: Snapshot) -> str:
    return f"{len(snapshot.live)} live" if snapshot.live else "ended"


def _when(manifest: dict[str, Any]) -> str:
    created = manifest.get("created")
    return "?" if created is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(created)))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]


def add_logs(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "logs", help="the stdout and stderr of the job that ran a task, and its traceback",
        description="Print the end of the stdout and stderr of the array element that ran TASK (tasks packed "
                    "into one element share them), and the task's remote traceback if it raised. TASK is the "
                    "task's number in the run: the order of submission, from 0.")
    parser.add_argument("run", metavar="RUN_DIR")
    parser.add_argument("task", type=int, metavar="TASK")
    _add_site_options(parser, backend=False)
    parser.set_defaults(handler=run_logs)


def run_logs(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        run = await site.open(await site.locate(args.run))
        task = (await run.snapshot()).task(args.task)
        print(f"task {task.task_id}: element {task.element} (batch {task.batch}), {task.state}"
              + (f": {task.detail}" if task.detail else ""))
        logs = await run.logs(task)
        paths = run.log_paths(task)
        for stream, data in logs.items():
            where = "the pod's log" if capabilities(run.backend).api else paths[stream]
            print(f"--- {'stdout' if stream == 'out' else 'stderr'} ({where}) ---")
            text = data.decode(errors="replace")
            print(text.rstrip("\n") if text else "(empty)")
        if task.traceback:
            print("--- the task's traceback ---")
            print(task.traceback.rstrip("\n"))
        return 0

    return _with_site(args, work)


def add_cancel(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "cancel", help="cancel every queued or running job of a run",
        description="Mark every unfinished task of the run to be skipped, then cancel its queued and running "
                    "array elements at the scheduler. A client still watching the run sees those futures fail "
                    "with JobFailedError(state='CANCELLED'); finished results stay.")
    parser.add_argument("run", metavar="RUN_DIR")
    _add_site_options(parser, backend=False)
    parser.set_defaults(handler=run_cancel)


def run_cancel(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        run = await site.open(await site.locate(args.run))
        before, cancelled, elements = await run.cancel()
        done = sum(1 for t in before.tasks if t.state in (SUCCEEDED, RAISED))
        print(f"cancelled {cancelled} tasks in {elements} elements of {run.root}; "
              f"{done} had finished and keep their results")
        return 0

    return _with_site(args, work)


def add_clean(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "clean", help="remove run directories whose jobs have all ended",
        description="Remove run directories under work_dir (or those named) whose array elements have all "
                    "ended and whose client is not running on this machine. A run with jobs still queued or "
                    "running is never removed: cancel it first.")
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", help="only these runs (default: all in work_dir)")
    parser.add_argument("--older-than", type=_age, metavar="AGE",
                        help="only runs created more than AGE ago: 90s, 30m, 12h, 7d")
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    _add_site_options(parser, backend=False)
    parser.set_defaults(handler=run_clean)


def _age(text: str) -> float:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_clean(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        roots = [await site.locate(r) for r in args.runs] if args.runs else await site.runs()
        removed = kept = 0
        for root, snapshot in zip(roots, await site.snapshots(roots)):
            if not isinstance(snapshot, Snapshot):
                kept += 1
                print(f"kept     {root}: {snapshot}")
                continue
            run = snapshot.run
            reason = ""
            if snapshot.live:
                reason = f"{len(snapshot.live)} elements still queued or running"
            elif run.client_alive():
                reason = f"its client (pid {run.manifest.get('pid')}) is still running"
            elif args.older_than is not None and (age(run.manifest) or 0) < args.older_than:
                reason = "newer than --older-than"
            if reason:
                kept += 1
                print(f"kept     {root}: {reason}")
                continue
            if not args.dry_run:
                await run.remove()
            removed += 1
            print(f"{'would remove' if args.dry_run else 'removed'}  {root} ({format_counts(snapshot.counts())})")
        print(f"{removed} {'to remove' if args.dry_run else 'removed'}, {kept} kept")
        return 0

    return _with_site(args, work)


# ---------------------------------------------------------------- nodes


def add_nodes(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "nodes", help="CPUs, memory and GPUs (by type) free per node and partition (SLURM)",
        description="One `scontrol --oneliner --details show node`: what is free on each node and in each "
                    "partition, GPUs by type. Down or drained nodes offer nothing.")
    parser.add_argument("--partition", help="only the nodes of this partition")
    parser.add_argument("--json", action="store_true", help="print JSON")
    _add_site_options(parser)
    parser.set_defaults(handler=run_nodes)


def run_nodes(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        if site.settings.backend not in ("slurm", "local"):
            return _fail(f"nodes reads SLURM's scontrol; the backend here is {site.settings.backend!r}")
        answer = await site.transport.run(NODES_ARGV)
        if not answer.ok:
            return _fail(f"cannot list the nodes on {site.where()}: {answer.describe()}")
        nodes = [n for n in parse_nodes(answer.stdout) if args.partition is None or args.partition in n.partitions]
        if args.json:
            print(json.dumps({"nodes": [n.as_json() for n in nodes],
                              "partitions": [p.as_json() for p in partitions(nodes)]}, indent=1))
        elif nodes:
            print(_format_board(nodes))
        else:
            print(f"no nodes{' in partition ' + args.partition if args.partition else ''} on {site.where()}")
        return 0

    return _with_site(args, work)


def _gpus(free: Counter[str], total: Counter[str]) -> str:
    return ", ".join(f"{kind or 'gpu'} {free[kind]}/{total[kind]}" for kind in sorted(total)) or "-"


def _format_board(nodes: list[Node]) -> str:
    node_rows = [[n.name, n.state.lower(), ",".join(n.partitions), f"{n.cpus_free}/{n.cpus}",
                  f"{n.memory_free_mb / 1024:.1f}/{n.memory_mb / 1024:.1f}", _gpus(n.gpus_free(), n.gpus)]
                 for n in nodes]
    part_rows = [[p.name, f"{p.nodes_usable}/{p.nodes}", f"{p.cpus_free}/{p.cpus}", _gpus(p.gpus_free, p.gpus)]
                 for p in partitions(nodes)]
    return "\n".join([
        *_table(["NODE", "STATE", "PARTITIONS", "CPUS FREE", "MEM FREE (GiB)", "GPUS FREE BY TYPE"], node_rows), "",
        *_table(["PARTITION", "NODES UP", "CPUS FREE", "GPUS FREE BY TYPE"], part_rows)])


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"clustrix-futures: error: {message}", file=sys.stderr)
    return 2


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [add_doctor, add_status, add_logs, add_cancel, add_clean,
                                                    add_nodes, add_bench]


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
