"""A run's timeline as a picture: one row per array element, a thin line from its submission to its start (the
queue wait) and a bar from its start to its end, coloured by its outcome. Needs matplotlib (the ``plot`` extra).

The x axis is seconds since the run's first submission, on the filesystem's clock (each element placed by its
journal's modification time at its start, :mod:`clustrix_futures.tools.report`); the bars' lengths are the
elements' wall times on their node's clock. A run without filesystem times (S3) is drawn from its elements'
starts on the nodes' clocks, without queue waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from clustrix_futures.errors import ConfigError
from clustrix_futures.tools.runs import CANCELLED, FAILED, RAISED, SUCCEEDED

if TYPE_CHECKING:
    from clustrix_futures.tools.report_model import ElementRun, RunFacts

COLOURS = {SUCCEEDED: "#2e8b57", RAISED: "#e69f00", FAILED: "#c0392b", CANCELLED: "#7f7f7f",
           "running": "#1f77b4", "queued": "#c7c7c7"}
MAX_ROWS = 400  # elements drawn; a longer run shows its first ones and says so


def plot_timeline(report: RunFacts, path: str) -> None:
    """Write the timeline of ``report`` to ``path`` (ConfigError if matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'clustrix-futures[plot]'") from None
    elements = report.elements[:MAX_ROWS]
    places, on_fs = _places(elements)
    figure, axes = plt.subplots(figsize=(10, min(12, 2 + 0.3 * len(elements))))
    _draw_bars(axes, elements, places)
    axes.set_yticks(range(len(elements)))
    axes.set_yticklabels([f"{e.name} ({len(e.task_ids)})" for e in elements], fontsize=7 if len(elements) > 30 else 9)
    axes.invert_yaxis()
    clock = "the filesystem's clock" if on_fs else "the nodes' clocks, no queue wait known"
    axes.set_xlabel(f"seconds since the first submission ({clock})" if on_fs else f"seconds since the first start "
                                                                                   f"({clock})")
    axes.set_ylabel("array element (tasks in it)")
    shown = sorted({e.outcome for e in elements if e.outcome in COLOURS}, key=list(COLOURS).index)
    handles: list[Any] = [Patch(color=COLOURS[o], label=o) for o in shown]
    handles.append(Patch(color="#555555", label="queue wait (submit to start)"))
    axes.legend(handles=handles, loc="lower right", fontsize=8)
    more = f" (first {MAX_ROWS} of {len(report.elements)} elements)" if len(report.elements) > MAX_ROWS else ""
    axes.set_title(f"{report.root.rsplit('/', 1)[-1]}: {len(report.tasks)} tasks on {report.backend}{more}")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _draw_bars(axes: Any, elements: list[ElementRun], places: dict[int, tuple[Optional[float], float, float]]) -> None:
    """One row per element: its queue wait as a line, its run as a bar (at least a sliver wide, to be seen)."""
    span = max((end for _, _, end in places.values()), default=1.0) or 1.0
    for row, element in enumerate(elements):
        place = places.get(id(element))
        if place is None:
            continue
        submitted, start, end = place
        if submitted is not None:
            axes.hlines(row, submitted, start, colors="#555555", linewidth=1)
            axes.plot([submitted], [row], marker="|", color="#555555", markersize=8)
        axes.barh(row, max(end - start, span / 200), left=start, height=0.6,
                  color=COLOURS.get(element.outcome, "#9467bd"), edgecolor="black", linewidth=0.4)


def _places(elements: list[ElementRun]) -> tuple[dict[int, tuple[Optional[float], float, float]], bool]:
    """Each drawn element's (submitted, start, end) on the x axis, and whether they are on the filesystem's
    clock (every started element has its times) or on the nodes' (from the earliest start)."""
    started = [e for e in elements if e.start is not None]
    on_fs = bool(started) and all(e.started_on_fs is not None and e.queue_wait is not None for e in started)
    places: dict[int, tuple[Optional[float], float, float]] = {}
    if on_fs:
        origin = min((e.started_on_fs or 0.0) - (e.queue_wait or 0.0) for e in started)
        for e in started:
            start = (e.started_on_fs or 0.0) - origin
            places[id(e)] = (start - (e.queue_wait or 0.0), start, start + _length(e))
    elif started:
        origin = min(e.start or 0.0 for e in started)
        for e in started:
            start = (e.start or 0.0) - origin
            places[id(e)] = (None, start, start + _length(e))
    return places, on_fs


def _length(element: ElementRun) -> float:
    """How long an element ran: to its end frame, or (one that died) to the end of its last task."""
    if element.wall is not None:
        return element.wall
    if element.last_frame is not None and element.start is not None:
        return element.last_frame - element.start
    return 0.0
