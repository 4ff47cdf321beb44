"""What is free on a SLURM cluster right now, per node and per partition: ``clustrix-futures nodes``.

One ``scontrol --oneliner --details show node`` gives, per node, its CPUs (total and allocated), memory, GPUs
by type (``Gres=gpu:a100:4``) and GPUs in use (``GresUsed=gpu:a100:1(IDX:0)``), its state and partitions. A
node that is down, drained or not responding offers nothing, whatever it holds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NODES_ARGV = ["scontrol", "--oneliner", "--details", "show", "node"]
_UNUSABLE = ("DOWN", "DRAIN", "FAIL", "MAINT", "POWERED_DOWN", "POWERING_DOWN", "NOT_RESPONDING", "FUTURE",
             "REBOOT", "UNKNOWN", "INVALID", "*")


@dataclass
class Node:
    name: str
    state: str
    partitions: list[str]
    cpus: int
    cpus_allocated: int
    memory_mb: int
    memory_allocated_mb: int
    gpus: Counter[str] = field(default_factory=Counter)  # by type ("" when the cluster names none)
    gpus_used: Counter[str] = field(default_factory=Counter)

    @property
    def usable(self) -> bool:
        return not any(word in self.state for word in _UNUSABLE)

    @property
    def cpus_free(self) -> int:
        return max(0, self.cpus - self.cpus_allocated) if self.usable else 0

    @property
    def memory_free_mb(self) -> int:
        return max(0, self.memory_mb - self.memory_allocated_mb) if self.usable else 0

    def gpus_free(self) -> Counter[str]:
        if not self.usable:
            return Counter({kind: 0 for kind in self.gpus})
        return Counter({kind: max(0, total - self.gpus_used[kind]) for kind, total in self.gpus.items()})

    def as_json(self) -> dict[str, Any]:
        return {"node": self.name, "state": self.state, "partitions": self.partitions, "cpus": self.cpus,
                "cpus_free": self.cpus_free, "memory_mb": self.memory_mb, "memory_free_mb": self.memory_free_mb,
                "gpus": dict(self.gpus), "gpus_free": dict(self.gpus_free())}


def gpu_counts(text: str) -> Counter[str]:
    """``gpu:a100:4(S:0-1),gpu:v100:2,nic:1`` to ``{"a100": 4, "v100": 2}``; untyped ``gpu:2`` counts as ``""``."""
    counts: Counter[str] = Counter()
    for entry in re.sub(r"\([^)]*\)", "", text).split(","):
        parts = entry.strip().split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        kind, number = (parts[1], parts[2]) if len(parts) >= 3 else ("", parts[1])
        if number.isdigit():
            counts[kind] += int(number)
    return counts


def parse_nodes(stdout: str) -> list[Node]:
    nodes = []
    for line in stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "NodeName" not in fields:
            continue
        number = {name: int(value) for name, value in fields.items() if value.isdigit()}
        nodes.append(Node(
            name=fields["NodeName"], state=fields.get("State", "?"),
            partitions=[p for p in fields.get("Partitions", "").split(",") if p],
            cpus=number.get("CPUTot") or number.get("CPUEfctv", 0), cpus_allocated=number.get("CPUAlloc", 0),
            memory_mb=number.get("RealMemory", 0), memory_allocated_mb=number.get("AllocMem", 0),
            gpus=gpu_counts(fields.get("Gres", "")), gpus_used=gpu_counts(fields.get("GresUsed", ""))))
    return nodes


@dataclass
class Partition:
    name: str
    nodes: int = 0
    nodes_usable: int = 0
    cpus: int = 0
    cpus_free: int = 0
    gpus: Counter[str] = field(default_factory=Counter)
    gpus_free: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {"partition": self.name, "nodes": self.nodes, "nodes_usable": self.nodes_usable, "cpus": self.cpus,
                "cpus_free": self.cpus_free, "gpus": dict(self.gpus), "gpus_free": dict(self.gpus_free)}


def partitions(nodes: Iterable[Node]) -> list[Partition]:
    """Per partition, the sums over its nodes (a node in two partitions counts in both)."""
    found: dict[str, Partition] = {}
    for node in nodes:
        for name in node.partitions or ["(none)"]:
            part = found.setdefault(name, Partition(name))
            part.nodes += 1
            part.nodes_usable += node.usable
            part.cpus += node.cpus
            part.cpus_free += node.cpus_free
            part.gpus.update(node.gpus)
            part.gpus_free.update(node.gpus_free())
    return [found[name] for name in sorted(found)]
