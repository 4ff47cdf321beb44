"""How queued tasks become array jobs: grouped by resources, packed into elements, split to the array limit.

Pure functions over task ids; the monitor does the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from clustrix_futures.config import Settings

# The options each array is submitted with; "pe" (Grid Engine) and "flavor" (PBS) are read by those backends.
RESOURCE_OPTIONS = ("cpus", "mem", "time", "partition", "account", "gpus", "nodes", "job_name", "scheduler_args",
                    "pe", "flavor")


def resources_of(settings: Settings, overrides: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The scheduler resources of a task: the executor's, with a resource view's overrides."""
    merged = {name: settings[name] for name in RESOURCE_OPTIONS}
    merged.update({k: v for k, v in (overrides or {}).items() if k in RESOURCE_OPTIONS})
    return merged


def resource_key(resources: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(resources.items()))


def plan_arrays(task_ids: Sequence[int], per_element: int, max_array_size: Optional[int]) -> list[list[list[int]]]:
    """Split tasks (all with the same resources) into arrays of elements of at most ``per_element`` tasks.

    Tasks are spread evenly: 10 tasks at 4 per element give elements of 4, 3, 3, not 4, 4, 2.
    """
    if not task_ids:
        return []
    count = math.ceil(len(task_ids) / per_element)
    size, extra = divmod(len(task_ids), count)
    elements, start = [], 0
    for number in range(count):
        end = start + size + (1 if number < extra else 0)
        elements.append(list(task_ids[start:end]))
        start = end
    limit = max_array_size or len(elements)
    return [elements[i:i + limit] for i in range(0, len(elements), limit)]
