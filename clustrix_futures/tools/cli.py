"""The ``clustrix-futures`` command. One subcommand per ``add_*`` function in :data:`SUBCOMMANDS`.

To add one: write ``add_NAME(subparsers)`` that calls ``subparsers.add_parser`` and sets ``handler=`` (a
function of the parsed arguments returning the exit status), and append it to :data:`SUBCOMMANDS`. The options
that name a cluster and the error convention are in :mod:`clustrix_futures.tools.subcommand`; the run-directory
commands in :mod:`~clustrix_futures.tools.run_commands`, ``nodes`` in :mod:`~clustrix_futures.tools.nodes_command`
``bench`` in :mod:`~clustrix_futures.tools.bench_command`, ``report`` in
:mod:`~clustrix_futures.tools.report_command` and ``trust`` in
:mod:`~clustrix_futures.tools.trust_command`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from clustrix_futures import __version__
from clustrix_futures.tools.bench_command import add_bench
from clustrix_futures.tools.nodes_command import add_nodes
from clustrix_futures.tools.report_command import add_report
from clustrix_futures.tools.run_commands import add_cancel, add_clean, add_logs, add_status
from clustrix_futures.tools.subcommand import Subparsers, add_site_options, site_options
from clustrix_futures.tools.trust_command import add_trust


def add_doctor(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check that a profile works, and say how to fix what does not",
        description="Check the configuration, the SSH connection and host key, the remote interpreter and its "
                    "version, the scheduler, work_dir, the resources (SLURM: sbatch --test-only), then run one "
                    "tiny job and time it. Exit status 1 if a check failed.")
    add_site_options(parser)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the test job's result (default 300)")
    parser.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from clustrix_futures.tools.doctor import Doctor, format_checks

    doctor = Doctor(args.profile, args.backend, site_options(args), args.timeout)
    print(format_checks(doctor.run()))
    return 0 if doctor.healthy else 1


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [add_doctor, add_status, add_logs, add_cancel, add_clean,
                                                    add_nodes, add_bench, add_trust, add_report]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clustrix-futures",
                                     description="Tools for clustrix-futures executors.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
