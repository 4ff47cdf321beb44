"""The ``retry_policy`` option: right-sizing an element that ran out of memory or time (applied by
:mod:`clustrix_futures.engine.resizing`).

``{"mem": 2, "time": 2, "attempts": 3}``: an element that ended ``OUT_OF_MEMORY`` runs again with its memory
times ``mem``, one that ended ``TIMEOUT`` with its time limit times ``time``, never past the partition's limit,
``attempts`` runs in all (the first included). Either factor may be left out: that state is then not retried.
"""

from __future__ import annotations

from typing import Any, Optional

from clustrix_futures.errors import ConfigError

GROWN = {"OUT_OF_MEMORY": "mem", "TIMEOUT": "time"}  # the state an element ended in -> the option it grows
_EXAMPLE = "{'mem': 2, 'time': 2, 'attempts': 3}"


def retry_policy(name: str, value: Any) -> Optional[dict[str, Any]]:
    """The option's value checked, with ``attempts`` filled in (3); None when unset."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value.keys() <= {"mem", "time", "attempts"} or not (
            value.keys() & {"mem", "time"}):
        raise ConfigError(f"option {name!r} must be a mapping like {_EXAMPLE} (mem or time, or both), "
                          f"not {value!r}")
    for key in ("mem", "time"):
        factor = value.get(key, 2)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
            raise ConfigError(f"option {name!r}: {key!r} must be a factor above 1, not {factor!r}")
    attempts = value.get("attempts", 3)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 2:
        raise ConfigError(f"option {name!r}: 'attempts' must be an integer of at least 2 (runs in all, the "
                          f"first included), not {attempts!r}")
    return {"attempts": 3, **value}
