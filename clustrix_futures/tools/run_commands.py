"""``clustrix-futures status``, ``logs``, ``cancel`` and ``clean``: the commands that read or act on run directories.

Each reads what a run directory holds (made by any client, alive or not) through :class:`~.runs.Site`, asks the
scheduler at most once per run, and never takes a run over or resubmits anything (that is
``ClusterPoolExecutor.attach``). ``RUN_DIR`` is a path, or a run's name under ``work_dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from clustrix_futures.errors import ConfigError
from clustrix_futures.schedulers import capabilities
from clustrix_futures.schedulers.base import QUEUED, RUNNING
from clustrix_futures.tools.runs import RAISED, SUCCEEDED, Snapshot, age, format_counts, parse_age
from clustrix_futures.tools.runs import RunSite as Site
from clustrix_futures.tools.subcommand import Subparsers, add_site_options, table, with_site

SHOWN_BY_DEFAULT = 20  # tasks listed by ``status RUN_DIR`` without --tasks


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
    add_site_options(parser, backend=False)
    parser.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        if args.run is None:
            return await _list_runs(site, args.json)
        snapshot = await (await site.open(await site.locate(args.run))).snapshot()
        if args.json:
            print(json.dumps(snapshot.as_json(), indent=1))
        else:
            print(_describe_run(snapshot))
            _print_tasks(snapshot, every_task=args.tasks)
        return 0

    return with_site(args, work)


def _print_tasks(snapshot: Snapshot, every_task: bool) -> None:
    """The tasks that did not succeed and are not waiting (every task with ``every_task``), up to a limit."""
    shown = [t for t in snapshot.tasks if every_task or t.state not in (SUCCEEDED, QUEUED, RUNNING)]
    limit = len(shown) if every_task else SHOWN_BY_DEFAULT
    if not shown:
        return
    rows = [[str(t.task_id), t.element, t.state, t.detail] for t in shown[:limit]]
    print()
    print("\n".join(table(["TASK", "ELEMENT", "STATE", "DETAIL"], rows)))
    if len(shown) > limit:
        print(f"... {len(shown) - limit} more (--tasks lists every task)")


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
    print("\n".join(table(["RUN", "BACKEND", "CREATED", "JOBS", "TASKS"], rows)))
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


def add_logs(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "logs", help="the stdout and stderr of the job that ran a task, and its traceback",
        description="Print the end of the stdout and stderr of the array element that ran TASK (tasks packed "
                    "into one element share them), and the task's remote traceback if it raised. TASK is the "
                    "task's number in the run: the order of submission, from 0.")
    parser.add_argument("run", metavar="RUN_DIR")
    parser.add_argument("task", type=int, metavar="TASK")
    add_site_options(parser, backend=False)
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

    return with_site(args, work)


def add_cancel(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "cancel", help="cancel every queued or running job of a run",
        description="Mark every unfinished task of the run to be skipped, then cancel its queued and running "
                    "array elements at the scheduler. A client still watching the run sees those futures fail "
                    "with JobFailedError(state='CANCELLED'); finished results stay.")
    parser.add_argument("run", metavar="RUN_DIR")
    add_site_options(parser, backend=False)
    parser.set_defaults(handler=run_cancel)


def run_cancel(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        run = await site.open(await site.locate(args.run))
        before, cancelled, elements = await run.cancel()
        done = sum(1 for t in before.tasks if t.state in (SUCCEEDED, RAISED))
        print(f"cancelled {cancelled} tasks in {elements} elements of {run.root}; "
              f"{done} had finished and keep their results")
        return 0

    return with_site(args, work)


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
    add_site_options(parser, backend=False)
    parser.set_defaults(handler=run_clean)


def _age(text: str) -> float:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reason_to_keep(snapshot: Snapshot | BaseException, older_than: float | None) -> str:
    """Why ``clean`` keeps a run ("" when it may go): it could not be read, it is alive, or it is too young."""
    if not isinstance(snapshot, Snapshot):
        return str(snapshot)
    if snapshot.live:
        return f"{len(snapshot.live)} elements still queued or running"
    if snapshot.run.client_alive():
        return f"its client (pid {snapshot.run.manifest.get('pid')}) is still running"
    if older_than is not None and (age(snapshot.run.manifest) or 0) < older_than:
        return "newer than --older-than"
    return ""


def run_clean(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        roots = [await site.locate(r) for r in args.runs] if args.runs else await site.runs()
        removed = kept = failed = 0
        for root, snapshot in zip(roots, await site.snapshots(roots)):
            reason = _reason_to_keep(snapshot, args.older_than)
            if reason or not isinstance(snapshot, Snapshot):
                kept += 1
                print(f"kept     {root}: {reason}")
                continue
            if not args.dry_run:
                try:
                    await snapshot.run.remove()
                except (OSError, ConfigError) as exc:
                    failed += 1
                    print(f"FAILED   {root}: {exc}", file=sys.stderr)
                    continue
            removed += 1
            print(f"{'would remove' if args.dry_run else 'removed'}  {root} ({format_counts(snapshot.counts())})")
        print(f"{removed} {'to remove' if args.dry_run else 'removed'}, {kept} kept"
              + (f", {failed} could not be removed" if failed else ""))
        return 1 if failed else 0

    return with_site(args, work)
