"""``clustrix-futures nodes``: CPUs, memory and GPUs free per node and per partition, on the selected SLURM.

The cluster is the one the profile or flags select, as for every other command; a backend without nodes to
list (``local``, a plain ``ssh`` host) or with another scheduler is refused with a message that says so,
rather than quietly asking some SLURM.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from clustrix_futures.errors import ConfigError
from clustrix_futures.remote.site import Site
from clustrix_futures.tools.nodes import NODES_ARGV, Node, parse_nodes, partitions
from clustrix_futures.tools.subcommand import Subparsers, add_site_options, fail, site_settings, table, with_site

NOT_A_SCHEDULER = ("local", "ssh")


def add_nodes(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "nodes", help="CPUs, memory and GPUs (by type) free per node and partition (SLURM)",
        description="One `scontrol --oneliner --details show node` on the selected SLURM cluster (--profile, "
                    "or --backend slurm): what is free on each node and in each partition, GPUs by type. Down or "
                    "drained nodes offer nothing.")
    parser.add_argument("--partition", help="only the nodes of this partition")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_site_options(parser)
    parser.set_defaults(handler=run_nodes)


def refusal(backend: str) -> str:
    """Why ``nodes`` cannot list the nodes of ``backend``; "" for SLURM."""
    if backend in NOT_A_SCHEDULER:
        return (f"the backend is {backend!r}, which is not a scheduler: it has no nodes to list. Select a SLURM "
                f"cluster with --profile P (a profile with backend: slurm) or --backend slurm")
    if backend != "slurm":
        return f"nodes reads SLURM's scontrol; the backend here is {backend!r}"
    return ""


def run_nodes(args: argparse.Namespace) -> int:
    try:
        settings = site_settings(args)
    except (ConfigError, ValueError) as exc:
        return fail(str(exc))
    if refusal(settings.backend):
        return fail(refusal(settings.backend))
    return with_site(args, lambda site: _show_nodes(site, args), settings)


async def _show_nodes(site: Site, args: argparse.Namespace) -> int:
    answer = await site.transport.run(NODES_ARGV)
    if not answer.ok:
        return fail(f"cannot list the nodes on {site.where()}: {answer.describe()}")
    nodes = [n for n in parse_nodes(answer.stdout) if args.partition is None or args.partition in n.partitions]
    if args.json:
        print(json.dumps({"nodes": [n.as_json() for n in nodes],
                          "partitions": [p.as_json() for p in partitions(nodes)]}, indent=1))
    elif nodes:
        print(format_board(nodes))
    else:
        print(f"no nodes{' in partition ' + args.partition if args.partition else ''} on {site.where()}")
    return 0


def _gpus(free: Counter[str], total: Counter[str]) -> str:
    return ", ".join(f"{kind or 'gpu'} {free[kind]}/{total[kind]}" for kind in sorted(total)) or "-"


def format_board(nodes: list[Node]) -> str:
    """The node table, then the partition table."""
    node_rows = [[n.name, n.state.lower(), ",".join(n.partitions), f"{n.cpus_free}/{n.cpus}",
                  f"{n.memory_free_mb / 1024:.1f}/{n.memory_mb / 1024:.1f}", _gpus(n.gpus_free(), n.gpus)]
                 for n in nodes]
    part_rows = [[p.name, f"{p.nodes_usable}/{p.nodes}", f"{p.cpus_free}/{p.cpus}", _gpus(p.gpus_free, p.gpus)]
                 for p in partitions(nodes)]
    return "\n".join([
        *table(["NODE", "STATE", "PARTITIONS", "CPUS FREE", "MEM FREE (GiB)", "GPUS FREE BY TYPE"], node_rows), "",
        *table(["PARTITION", "NODES UP", "CPUS FREE", "GPUS FREE BY TYPE"], part_rows)])


