"""How schedulers write times, sizes and array index ranges, and our resource options in those units.

:class:`Resources` reads the options an array is submitted with (``ArraySubmission.resources``) as the numbers
and words the schedulers want; the functions convert SLURM's time forms (what the ``time`` option accepts),
sizes like ``8G`` (the ``mem`` option), the index ranges schedulers print, and the times and sizes of Grid
Engine's and PBS's queue limits (:func:`clock_seconds`, :func:`size_megabytes`, through :func:`readable`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Optional

_MEMORY_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def expand_ranges(spec: str) -> list[int]:
    """Array indices as schedulers print them, to a list: ``7``; squeue's ``[1-3,7%2]`` (``%`` is the
    throttle); Grid Engine's ``2,3,8-10:1`` and ``1-9:2`` (``:`` is the step); PBS's ``[0-3]``."""
    indices: list[int] = []
    for part in spec.strip("[]").split("%")[0].split(","):
        bounds, _, step = part.partition(":")
        low, _, high = bounds.partition("-")
        indices.extend(range(int(low), int(high or low) + 1, int(step or 1)))
    return indices


def walltime_seconds(value: Any) -> int:
    """One of SLURM's time forms (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; what the ``time``
    option accepts) to seconds."""
    text = str(value)
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = [*parts, 0, 0][:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 1:  # minutes
        return parts[0] * 60
    if len(parts) == 2:  # MM:SS
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


def hhmmss(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def megabytes(value: Any) -> int:
    """A size as the ``mem`` option holds it (``512M``, ``8G``, ``1024`` = MB) to whole megabytes."""
    found = re.fullmatch(r"(\d+)([KMGT]?)", str(value).upper())
    if found is None:
        raise ValueError(f"not a size: {value!r}")
    return max(1, math.ceil(int(found.group(1)) * _MEMORY_UNITS[found.group(2) or "M"]))


def clock_seconds(value: str) -> int:
    """A time as Grid Engine and PBS write it, seconds (``3600``) or ``[[H:]M:]S`` (``01:00:00``, ``90:00``; Grid
    Engine's ``1::1`` leaves zeros out, PBS Pro's seconds may have a fraction, dropped), to seconds. Raises
    ValueError for any other form."""
    *clock, last = value.strip().split(":")
    seconds, _, fraction = last.partition(".")
    fields = [*clock, seconds]
    if len(fields) > 3 or not value.strip() or not all(re.fullmatch(r"[0-9]*", f) for f in [*fields, fraction]):
        raise ValueError(f"not a time: {value!r}")
    total = 0
    for field in fields:
        total = total * 60 + int(field or 0)
    return total


def size_megabytes(value: str, units: Mapping[str, int]) -> int:
    """A size written as a whole number and a unit named in ``units`` (its bytes; ``""`` for a bare number) to
    whole megabytes, rounded down: a limit converted so is never exceeded. Raises ValueError for another form
    or unit."""
    found = re.fullmatch(r"([0-9]+)([A-Za-z]*)", value.strip())
    if found is None or found.group(2) not in units:
        raise ValueError(f"not a size: {value!r}")
    return int(found.group(1)) * units[found.group(2)] // (1024 * 1024)


def readable(convert: Callable[[str], int], value: Optional[str]) -> Optional[int]:
    """``convert(value)``, or None where there is no value or ``convert`` cannot read it (ValueError)."""
    if value is None:
        return None
    try:
        return convert(value)
    except ValueError:
        return None


class Resources:
    """The options an array is submitted with (``ArraySubmission.resources``), in the units schedulers want."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options

    def get(self, name: str) -> Any:
        return self.options.get(name)

    def name(self, unsafe: str) -> str:
        """The ``job_name`` option with the characters the scheduler refuses in names replaced by ``_``."""
        return re.sub(unsafe, "_", str(self.options.get("job_name") or "clustrix"))

    @property
    def megabytes(self) -> Optional[int]:
        return None if self.options.get("mem") is None else megabytes(self.options["mem"])

    @property
    def seconds(self) -> Optional[int]:
        return None if self.options.get("time") is None else walltime_seconds(self.options["time"])

    def flags(self, flags: Mapping[str, str]) -> list[str]:
        """``[flag, value]`` for each option in ``flags`` that is set, as separate words."""
        return [word for option, flag in flags.items() if self.options.get(option) is not None
                for word in (flag, str(self.options[option]))]

    @property
    def extra(self) -> list[str]:
        """The ``scheduler_args`` option: extra submission words, passed as they are."""
        return list(self.options.get("scheduler_args") or [])
