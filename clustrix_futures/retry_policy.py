"""The ``retry_policy`` option: what an element that ended in a given state runs again with (applied by
:mod:`clustrix_futures.engine.retrying`).

``{"OUT_OF_MEMORY": {"mem": "x2"}, "TIMEOUT": {"time": "x2"}}``: an element that ended ``OUT_OF_MEMORY`` runs
again with twice its memory, one that ended ``TIMEOUT`` with twice its time limit, never past the partition's
limit. A state named here is retried as if it were in ``retry_states``; one named with an empty mapping runs
again unchanged. ``retries`` bounds the runs after the first, as for every retried state. A factor is written
``"x2"`` or as the number ``2``, and must be above 1.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

from clustrix_futures.errors import ConfigError

GROWABLE = ("mem", "time")
_EXAMPLE = "{'OUT_OF_MEMORY': {'mem': 'x2'}, 'TIMEOUT': {'time': 'x2'}}"


def retry_policy(name: str, value: Any) -> Optional[dict[str, dict[str, float]]]:
    """The option's value checked, each factor as a number; None when unset."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(s, str) and re.fullmatch(r"[A-Z_]+", s) for s in value):
        raise ConfigError(f"option {name!r} must map scheduler states to what grows, like {_EXAMPLE}, "
                          f"not {value!r}")
    return {state: _growth(name, state, growth) for state, growth in value.items()}


def _growth(name: str, state: str, growth: Any) -> dict[str, float]:
    if not isinstance(growth, dict) or not growth.keys() <= set(GROWABLE):
        excluding = isinstance(growth, dict) and "exclude_node" in growth
        unsupported = " (excluding nodes is not supported)" if excluding else ""
        raise ConfigError(f"option {name!r}: {state} must map 'mem' or 'time' (or both, or neither) to a factor "
                          f"like 'x2', not {growth!r}{unsupported}")
    return {option: _factor(name, state, option, factor) for option, factor in growth.items()}


def _factor(name: str, state: str, option: str, factor: Any) -> float:
    text = factor[1:] if isinstance(factor, str) and factor[:1] in "xX" else factor
    try:
        number = 0.0 if isinstance(text, bool) else float(text)
    except (TypeError, ValueError):
        number = 0.0
    if not (math.isfinite(number) and number > 1):
        raise ConfigError(f"option {name!r}: {state}'s {option!r} must be a factor above 1 like 'x2', "
                          f"not {factor!r}")
    return number
