"""The facts of a run's report, computed from its elements and tasks (:class:`RunFacts`): totals, distributions,
efficiency, the slowest tasks. Where they come from, and which clock each time is on:
:mod:`clustrix_futures.tools.report`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from clustrix_futures.schedulers.base import QUEUED, RUNNING
from clustrix_futures.schedulers.units import megabytes, walltime_seconds
from clustrix_futures.tools.runs import FAILED, SUCCEEDED, Snapshot

SLOWEST = 5  # tasks listed as the slowest


@dataclass
class ElementRun:
    """One array element: what it was asked for and, from its MEASURE frames, what it used and where."""

    batch: int
    index: int
    job_id: str
    task_ids: list[int]
    resources: dict[str, Any]
    rerun: bool = False
    node: str = ""
    start: Optional[float] = None  # node clock
    end: Optional[float] = None  # node clock, from its end frame
    last_frame: Optional[float] = None  # the end of its last task frame (node clock)
    cpu: Optional[float] = None
    rss: Optional[int] = None
    queue_wait: Optional[float] = None
    started_on_fs: Optional[float] = None  # the journal's mtime at the start (filesystem clock)
    outcome: str = ""

    @property
    def name(self) -> str:
        return f"{self.job_id}_{self.index}"

    @property
    def wall(self) -> Optional[float]:
        return None if self.start is None or self.end is None else self.end - self.start


@dataclass
class TaskRun:
    task_id: int
    element: ElementRun
    state: str
    detail: str
    start: Optional[float] = None
    end: Optional[float] = None

    @property
    def run_time(self) -> Optional[float]:
        return None if self.start is None or self.end is None else self.end - self.start

    @property
    def latency(self) -> Optional[float]:
        element = self.element
        if self.end is None or element.queue_wait is None or element.start is None:
            return None
        return element.queue_wait + self.end - element.start


@dataclass
class RunFacts:
    """A run's elements and tasks, and what follows from them; ``as_json()`` for programs."""

    root: str
    backend: str
    snapshot: Snapshot
    elements: list[ElementRun] = field(default_factory=list)
    tasks: list[TaskRun] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        failures: dict[str, int] = {}
        for task in self.tasks:
            if task.state not in (SUCCEEDED, QUEUED, RUNNING):
                reason = failure_state(task)
                failures[reason] = failures.get(reason, 0) + 1
        reruns = [e for e in self.elements if e.rerun]
        return {"tasks": len(self.tasks), "elements": len(self.elements), "states": self.snapshot.counts(),
                "failures": failures, "retries": len(reruns),
                "retry_resources": [dict(e.resources, element=e.name) for e in reruns]}

    def distributions(self) -> dict[str, Optional[dict[str, float]]]:
        return {"queue_wait": spread([e.queue_wait for e in self.elements]),
                "run_time": spread([t.run_time for t in self.tasks]),
                "result_latency": spread([t.latency for t in self.tasks])}

    def efficiency(self) -> list[dict[str, Any]]:
        """Per set of requested resources: CPU and memory used against what was asked, with a hint."""
        groups: dict[str, list[ElementRun]] = {}
        for element in self.elements:
            if element.wall is not None:
                groups.setdefault(_resource_label(element.resources), []).append(element)
        return [_efficiency_of(label, members) for label, members in groups.items()]

    def slowest(self, count: int = SLOWEST) -> list[TaskRun]:
        timed = [t for t in self.tasks if t.run_time is not None]
        return sorted(timed, key=lambda t: -(t.run_time or 0.0))[:count]

    def as_json(self) -> dict[str, Any]:
        return {"run_dir": self.root, "backend": self.backend, "totals": self.totals(),
                "distributions": self.distributions(), "efficiency": self.efficiency(),
                "slowest": [_task_json(t) for t in self.slowest()],
                "elements": [_element_json(e) for e in self.elements],
                "tasks": [_task_json(t) for t in self.tasks]}


def failure_state(task: TaskRun) -> str:
    """What a task that did not succeed counts as: ``raised``, the scheduler's final state of a failed one
    (``OUT_OF_MEMORY``, ``TIMEOUT``...), or its state (``cancelled``, ``running``...)."""
    if task.state == FAILED and task.detail:
        word = task.detail.split()[0]
        return word if word.isupper() else FAILED
    return task.state


def spread(values: list[Optional[float]]) -> Optional[dict[str, float]]:
    """min, median, p90 (nearest rank) and max of the values that are known; None if none is."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    middle = len(known) // 2
    median = known[middle] if len(known) % 2 else (known[middle - 1] + known[middle]) / 2
    p90 = known[max(0, math.ceil(0.9 * len(known)) - 1)]
    return {"n": len(known), "min": known[0], "median": median, "p90": p90, "max": known[-1]}


def format_bytes(size: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


def _resource_label(resources: dict[str, Any]) -> str:
    shown = {k: resources.get(k) for k in ("cpus", "mem", "time", "partition") if resources.get(k) is not None}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "scheduler defaults"


def _efficiency_of(label: str, elements: list[ElementRun]) -> dict[str, Any]:
    resources = elements[0].resources
    cpus = int(resources.get("cpus") or 1)
    walls = [e.wall or 0.0 for e in elements]
    cpu = sum(e.cpu or 0.0 for e in elements)
    peak = max((e.rss or 0) for e in elements)
    result: dict[str, Any] = {"resources": label, "elements": len(elements), "cpus": cpus,
                              "cpu_efficiency": cpu / (cpus * sum(walls)) if sum(walls) > 0 else None,
                              "peak_rss": peak, "longest_element": max(walls)}
    hints = [f"{len(elements)} elements used {result['cpu_efficiency'] or 0:.0%} of {cpus} CPU(s)"]
    if resources.get("mem") is not None:
        asked = megabytes(resources["mem"]) * 1024 * 1024
        result["mem_efficiency"] = peak / asked
        hints.append(f"asked {resources['mem']}, used at most {format_bytes(peak)} ({peak / asked:.0%})")
    else:
        hints.append(f"no mem asked, used at most {format_bytes(peak)}")
    if resources.get("time") is not None:
        asked_time = walltime_seconds(resources["time"])
        result["time_efficiency"] = max(walls) / asked_time
        hints.append(f"asked time {resources['time']} ({asked_time} s), the longest element ran "
                     f"{max(walls):.1f} s")
    result["hint"] = "; ".join(hints)
    return result


def _element_json(element: ElementRun) -> dict[str, Any]:
    return {"element": element.name, "batch": element.batch, "tasks": element.task_ids, "node": element.node,
            "outcome": element.outcome, "rerun": element.rerun, "queue_wait": element.queue_wait,
            "wall": element.wall, "cpu": element.cpu, "peak_rss": element.rss, "resources": element.resources}


def _task_json(task: TaskRun) -> dict[str, Any]:
    return {"task": task.task_id, "element": task.element.name, "node": task.element.node, "state": task.state,
            "detail": task.detail, "run_time": task.run_time, "result_latency": task.latency}
