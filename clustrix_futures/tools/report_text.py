"""The plain-text form of a run's report (:class:`clustrix_futures.tools.report.RunReport`), for people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from clustrix_futures.tools.runs import format_counts
from clustrix_futures.tools.subcommand import table

if TYPE_CHECKING:
    from clustrix_futures.tools.report_model import RunFacts

DISTRIBUTIONS = {"queue_wait": "queue wait (submit to element start; filesystem clock)",
                 "run_time": "run time (per task; node clock)",
                 "result_latency": "result latency (submit to outcome journalled)"}


def report_text(report: RunFacts) -> str:
    totals = report.totals()
    lines = [f"run {report.root}: {report.backend}",
             f"{totals['tasks']} tasks in {totals['elements']} elements: {format_counts(totals['states'])}"]
    if totals["failures"]:
        lines.append("not succeeded, by state: " + ", ".join(f"{n} {s}" for s, n in totals["failures"].items()))
    lines.append(f"elements run again: {totals['retries']}")
    lines += ["", *_distribution_lines(report), ""]
    for group in report.efficiency():
        lines.append(f"{group['resources']}: {group['hint']}")
    slowest = report.slowest()
    if slowest:
        lines += ["", "slowest tasks:"]
        lines += table(["TASK", "ELEMENT", "NODE", "RUN TIME", "STATE"],
                       [[str(t.task_id), t.element.name, t.element.node or "?", _seconds(t.run_time), t.state]
                        for t in slowest])
    return "\n".join(lines).rstrip()


def _distribution_lines(report: RunFacts) -> list[str]:
    rows = []
    for name, found in report.distributions().items():
        if found is None:
            rows.append([DISTRIBUTIONS[name], "-", "-", "-", "-", "not measured"])
        else:
            rows.append([DISTRIBUTIONS[name], *(_seconds(found[k]) for k in ("min", "median", "p90", "max")),
                         f"n={found['n']}"])
    return table(["", "MIN", "MEDIAN", "P90", "MAX", ""], rows)


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f} s"
