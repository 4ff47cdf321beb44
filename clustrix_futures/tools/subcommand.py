"""What every ``clustrix-futures`` subcommand shares: the options that name a cluster, running with that cluster's
site open, the error convention (a message on stderr, exit status 2) and plain-text tables.

The options naming a cluster are ``--profile``, ``--backend`` (where the command needs one), ``--host``,
``--work-dir`` and any number of ``--option KEY=VALUE`` (values read as YAML); :func:`site_settings` merges them
with the profile exactly as ``ClusterPoolExecutor(...)`` would.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from clustrix_futures import config
from clustrix_futures.config import PROFILE_ENV
from clustrix_futures.errors import ClusterFuturesError
from clustrix_futures.tools.runs import RunSite as Site

Subparsers = Any  # argparse's _SubParsersAction, which is private


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as YAML: ``2`` is an int, ``true`` a bool, ``[a, b]`` a list."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return name.strip(), yaml.safe_load(value) if value else value


def add_site_options(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """Which cluster: a profile, or options. A run directory's own manifest supplies its backend."""
    parser.add_argument("--profile", help=f"a profile from the configuration file (default: ${PROFILE_ENV})")
    if backend:
        parser.add_argument("--backend", help="the backend, when no profile names it")
    parser.add_argument("--host", help="SSH host of the cluster (a ~/.ssh/config alias works)")
    parser.add_argument("--work-dir", help="the work_dir option: where run directories are made")
    parser.add_argument("--option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="another option (repeatable; values read as YAML)")


def site_options(args: argparse.Namespace) -> dict[str, Any]:
    """The executor options of ``add_site_options``' flags: each --option, then --host and --work-dir."""
    options: dict[str, Any] = dict(args.option)
    for key, value in (("host", args.host), ("work_dir", args.work_dir)):
        if value is not None:
            options[key] = value
    return options


def site_settings(args: argparse.Namespace) -> config.Settings:
    """The settings the flags select, resolved against the profile (a ``ConfigError`` names a bad key)."""
    return config.resolve(args.profile, getattr(args, "backend", None), None, site_options(args))


def with_site(args: argparse.Namespace, work: Callable[[Site], Awaitable[int]],
              settings: config.Settings | None = None) -> int:
    """Run ``work`` with the cluster's transport open; configuration problems become an error message."""
    async def main() -> int:
        async with Site(settings or site_settings(args)) as site:
            return await work(site)

    try:
        return asyncio.run(main())
    except (ClusterFuturesError, ValueError) as exc:
        return fail(str(exc))
    except Exception as exc:  # an unreachable S3 endpoint, a run directory that is not ours...: say so, briefly
        return fail(f"{type(exc).__name__}: {exc}")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, the header first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fail(message: str) -> int:
    """Print ``clustrix-futures: error: MESSAGE`` on stderr and return the exit status of a usage error."""
    print(f"clustrix-futures: error: {message}", file=sys.stderr)
    return 2
