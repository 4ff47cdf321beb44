"""Right-sizing (the ``retry_policy`` option, :mod:`clustrix_futures.retry_policy`): the resources an element
that ran out of memory or time runs again with.

An element that ended ``OUT_OF_MEMORY`` (``TIMEOUT``) runs again, its unfinished tasks only (the monitor writes
the skip markers of the others first), with its memory (time limit) times the policy's factor, capped at the
partition's limit (:meth:`~clustrix_futures.schedulers.base.Scheduler.limits`, asked once per partition). Once
it has run ``attempts`` times, or its size is at the cap already, its tasks fail with the state it ended in,
every run listed in the error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

from clustrix_futures.engine.records import Element
from clustrix_futures.retry_policy import GROWN
from clustrix_futures.schedulers.base import FinalState, Limits, Scheduler
from clustrix_futures.schedulers.units import hhmmss, megabytes, walltime_seconds


class Resizing:
    """Decides, for an element that ended, whether it runs again bigger (see the module's docstring)."""

    def __init__(self, policy: Optional[Mapping[str, Any]], scheduler: Scheduler) -> None:
        self.policy = policy
        self.scheduler = scheduler
        self._limits: dict[Optional[str], Limits] = {}

    async def grown(self, element: Element, final: FinalState,
                    resources: Mapping[str, Any]) -> tuple[Optional[dict[str, Any]], FinalState]:
        """The resources to run ``element`` again with (None: not again), and the state to fail its tasks with
        if it does not run again (``final``, the runs listed once the policy has been applied)."""
        option = GROWN.get(final.state)
        if self.policy is None or option is None or option not in self.policy:
            return None, final
        limits = await self._limits_of(resources.get("partition"))
        current = _size(option, resources.get(option), limits)
        runs = [*element.runs, f"{option}={_label(option, current)}: {final.state}"]
        cap = limits.mem_mb if option == "mem" else limits.seconds
        if current is None:
            why = f"it asked for no {option} and the partition tells no default: set {option!r}"
        elif element.attempts >= self.policy["attempts"]:
            why = f"it ran {element.attempts} times, the policy's 'attempts'"
        elif cap is not None and current >= cap:
            why = f"{_label(option, current)} is the partition's limit"
        else:
            element.runs = runs
            bigger = math.ceil(current * self.policy[option])
            return {**resources, option: _label(option, bigger if cap is None else min(bigger, cap))}, final
        detail = (final.detail + "; " if final.detail else "") + f"retry_policy stopped ({why}); runs: "
        return None, FinalState(final.state, detail + ", ".join(runs))

    async def _limits_of(self, partition: Optional[str]) -> Limits:
        if partition not in self._limits:
            self._limits[partition] = await self.scheduler.limits(partition)
        return self._limits[partition]


def _size(option: str, value: Any, limits: Limits) -> Optional[int]:
    """The element's memory (MB) or time (seconds), as asked or else the partition's default."""
    if value is not None:
        return megabytes(value) if option == "mem" else walltime_seconds(value)
    return limits.default_mem_mb if option == "mem" else limits.default_seconds


def _label(option: str, size: Optional[int]) -> str:
    if size is None:
        return "the default"
    return f"{size}M" if option == "mem" else hhmmss(size)
