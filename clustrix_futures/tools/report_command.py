"""``clustrix-futures report RUN_DIR [--json] [--plot OUT.png]``: a run's totals, times, efficiency and timeline
(:mod:`clustrix_futures.tools.report`), and :func:`report_of`, what ``ClusterPoolExecutor.report()`` calls."""

from __future__ import annotations

import argparse
import asyncio
import json

from clustrix_futures import config
from clustrix_futures.tools.report import RunReport, gather
from clustrix_futures.tools.runs import RunSite as Site
from clustrix_futures.tools.subcommand import Subparsers, add_site_options, with_site


def add_report(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="what a run did: failures by state, queue wait, run times, efficiency, a timeline",
        description="Read a run directory (made by any client, alive or not) and the measurements its elements "
                    "journalled (no scheduler accounting needed): totals and failures by state, retries, queue "
                    "wait / run time / result latency (min, median, p90, max), CPU and memory used against "
                    "what was asked, the slowest tasks. RUN_DIR is a path, or a run's name under work_dir.")
    parser.add_argument("run", metavar="RUN_DIR")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="write a timeline of the elements (needs matplotlib)")
    add_site_options(parser, backend=False)
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    async def work(site: Site) -> int:
        report = await gather(await site.open(await site.locate(args.run)))
        print(json.dumps(report.as_json(), indent=1) if args.json else report.text())
        if args.plot:
            report.plot(args.plot)
        return 0

    return with_site(args, work)


def report_of(settings: config.Settings, run_dir: str) -> RunReport:
    """The report of the run ``run_dir``, read with ``settings`` (an executor's) on a connection of its own."""
    async def main() -> RunReport:
        async with Site(settings) as site:
            return await gather(await site.open(run_dir))

    return asyncio.run(main())
