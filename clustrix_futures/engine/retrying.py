"""Whether an element that ended without every result runs again, and with what (``retry_states``,
``retries`` and ``retry_policy``, :mod:`clustrix_futures.retry_policy`).

An element that ended in a state of ``retry_states`` or of ``retry_policy`` runs again, its unfinished tasks
only (the monitor writes the skip markers of the others first), while it has run at most ``retries`` times
more than once. A state of ``retry_policy`` grows what its entry names: after ``OUT_OF_MEMORY`` with
``{"mem": 2}`` the element asks for twice its memory, capped at the partition's limit
(:meth:`~clustrix_futures.schedulers.base.Scheduler.limits`, asked once per partition). When it does not run
again (``retries`` reached, or everything it would grow is at its cap already), its tasks fail with the state
it ended in, and under ``retry_policy`` the error lists every run.

An element some task of which checkpointed (``signal_before_end``, :mod:`clustrix_futures.checkpoint`) runs
again whatever state it ended in, up to ``checkpoint_reruns`` times; those runs do not count against
``retries``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from clustrix_futures.config import Settings
from clustrix_futures.engine.records import Element
from clustrix_futures.schedulers.base import FinalState, Limits, Scheduler
from clustrix_futures.schedulers.units import hhmmss, megabytes, walltime_seconds

Decision = tuple[bool, Optional[dict[str, Any]], FinalState]  # run again?, with these resources, else fail so


class Retrying:
    """Decides, for an element that ended, whether it runs again, and with what (see the module's docstring)."""

    def __init__(self, settings: Settings, scheduler: Scheduler) -> None:
        self.policy: Mapping[str, Mapping[str, float]] = settings["retry_policy"] or {}
        self.states = set(settings["retry_states"]) | set(self.policy)
        self.retries: int = settings["retries"]
        self.checkpoint_reruns: int = settings["checkpoint_reruns"]
        self.scheduler = scheduler
        self._limits: dict[Optional[str], Limits] = {}

    async def decide(self, element: Element, final: FinalState, resources: Mapping[str, Any]) -> Decision:
        """Whether ``element``, which ended so (its journal read), runs again and with what resources."""
        if element.journal and element.journal.checkpointed:
            return self._resume(element, element.journal.checkpointed)
        if final.state not in self.states:
            return False, None, final
        growth = self.policy.get(final.state)
        if not growth:
            return element.attempts - element.resumes <= self.retries, None, final
        limits = await self._limits_of(resources.get("partition"))
        sizes = {option: _size(option, resources, limits) for option in growth}
        runs = [*element.runs, ", ".join(f"{o}={_label(o, size)}" for o, size in sizes.items()) + f": {final.state}"]
        grown = {option: _grown(option, size, factor, limits) for (option, factor), size in
                 zip(growth.items(), sizes.values())}
        if element.attempts - element.resumes > self.retries:
            why = f"it ran {element.attempts} times: retries={self.retries}"
        elif all(new is None or new == sizes[o] for o, new in grown.items()):
            why = "nothing it asks for can grow: " + ", ".join(_why_not(o, sizes[o]) for o in grown)
        else:
            element.runs = runs
            return True, {**resources, **{o: _label(o, new) for o, new in grown.items() if new}}, final
        detail = (final.detail + "; " if final.detail else "") + f"retry_policy stopped ({why}); runs: "
        return False, None, FinalState(final.state, detail + "; ".join(runs))

    def _resume(self, element: Element, checkpointed: Sequence[int]) -> Decision:
        tasks = ", ".join(map(str, checkpointed))
        if element.resumes >= self.checkpoint_reruns:
            return False, None, FinalState("CHECKPOINTED", f"task {tasks} checkpointed again after "
                                           f"{element.resumes} runs from checkpoints (checkpoint_reruns="
                                           f"{self.checkpoint_reruns})")
        element.resumes += 1
        return True, None, FinalState("CHECKPOINTED", f"task {tasks} checkpointed on the warning signal")

    async def _limits_of(self, partition: Optional[str]) -> Limits:
        if partition not in self._limits:
            self._limits[partition] = await self.scheduler.limits(partition)
        return self._limits[partition]


def _size(option: str, resources: Mapping[str, Any], limits: Limits) -> Optional[int]:
    """The element's memory (MB) or time (seconds), as asked or else the partition's default (a default per
    CPU times the CPUs it asked for)."""
    value = resources.get(option)
    if value is not None:
        return megabytes(value) if option == "mem" else walltime_seconds(value)
    if option == "time":
        return limits.default_seconds
    per_cpu = limits.default_mem_per_cpu_mb
    return limits.default_mem_mb or (per_cpu * int(resources.get("cpus") or 1) if per_cpu else None)


def _grown(option: str, size: Optional[int], factor: float, limits: Limits) -> Optional[int]:
    """``size`` times ``factor``, capped at the partition's limit; None if the size is not known."""
    if size is None:
        return None
    cap = limits.mem_mb if option == "mem" else limits.seconds
    bigger = math.ceil(size * factor)
    return bigger if cap is None else min(bigger, max(cap, size))


def _why_not(option: str, size: Optional[int]) -> str:
    if size is None:
        return f"it asked for no {option} and the partition tells no default: set {option!r}"
    return f"{_label(option, size)} is the partition's limit"


def _label(option: str, size: Optional[int]) -> str:
    if size is None:
        return "the default"
    return f"{size}M" if option == "mem" else hhmmss(size)
