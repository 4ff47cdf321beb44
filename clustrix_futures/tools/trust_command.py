"""``clustrix-futures trust FILE``: approve a ``./clustrix-futures.yaml`` (as direnv's ``allow`` does).

A configuration file in the current directory decides what runs execute, so it is read only once approved
(:mod:`clustrix_futures.config_files`): this records the SHA-256 of its current content. The file must be the
user's own and a valid configuration file; after any change it must be approved again.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from clustrix_futures import config_files
from clustrix_futures.errors import ConfigError
from clustrix_futures.tools.subcommand import Subparsers, fail


def add_trust(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "trust", help="approve a ./clustrix-futures.yaml after reading it (records its SHA-256)",
        description="A clustrix-futures.yaml in the current directory is read only once approved: this records "
                    "the SHA-256 of FILE's current content in the trust store of your configuration directory. "
                    "Read the file first: its profiles choose the hosts your tasks go to and the commands they "
                    "run. A changed file must be approved again.")
    parser.add_argument("file", metavar="FILE", type=Path)
    parser.set_defaults(handler=run_trust)


def run_trust(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        data = config_files.read_owned(path)
        if data is None:
            return fail(f"cannot approve {path}: there is no such file")
        profiles = config_files.parse(path, data)
        digest = config_files.approve(path)
    except ConfigError as exc:
        return fail(str(exc))
    print(f"trusted {os.path.realpath(path)} (sha256 {digest}): profiles {', '.join(sorted(profiles)) or 'none'}")
    return 0
