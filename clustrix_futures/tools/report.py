"""A run explained after the fact: what ``clustrix-futures report`` and ``ClusterPoolExecutor.report()`` give.

Everything comes from the run directory, read through :class:`~clustrix_futures.tools.runs.RunSite` like
``status`` (only our own runs; nothing unpickled; the scheduler asked once, for the tasks' states), and from the
measurements each array element journals about itself (:mod:`clustrix_futures.node.measure`): no scheduler
accounting database is needed.

Times, and which clock each comes from:

* a task's **run time**: its journal frame's end minus start, both the node's clock;
* an element's **queue wait**: the modification time of its journal just after the element wrote the preamble,
  minus that of the batch file (written just before the array was submitted), both stamped by the filesystem
  that holds the run, and read on the node; an element run again is timed from its batch script, rewritten at
  each submission. The client's clock is never compared with a node's. S3 runs have no such times: their queue
  wait is not reported;
* a task's **result latency**: its element's queue wait plus the time from the element's start to the task's
  end (the node's clock): from submission to its outcome being in the journal.

Efficiency compares an element's CPU time (``getrusage``: the process and its children) with ``cpus`` times
its wall time, and its peak resident memory with ``mem``, as the batch was submitted (``batches/B.json``).
"""

from __future__ import annotations

import posixpath
from typing import Optional

from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.layout import PARTIAL_SUFFIX, RESULT_SUFFIX, parse_result_name
from clustrix_futures.runfiles.records import read_batches
from clustrix_futures.tools.report_model import ElementRun, RunFacts, TaskRun
from clustrix_futures.tools.report_plot import plot_timeline
from clustrix_futures.tools.report_text import report_text
from clustrix_futures.tools.runs import FAILED, RAISED, SUCCEEDED, OpenRun, TaskState

RERUN_SUFFIX = ".rerun.json"


class RunReport(RunFacts):
    """A run's report: ``text()`` for people, ``as_json()`` for programs, ``plot(path)`` for a timeline."""

    def text(self) -> str:
        return report_text(self)

    def plot(self, path: str) -> None:
        """Write the timeline (PNG, or what the file name's suffix asks matplotlib for): needs the ``plot``
        extra (matplotlib)."""
        plot_timeline(self, path)




async def gather(run: OpenRun) -> RunReport:
    """The report of an opened run: its snapshot (one scheduler query), batch documents and journals."""
    snapshot = await run.snapshot()
    batch_names = await run.storage.listdir(run.run_dir.path("batches"))
    reruns = {name[:-len(RERUN_SUFFIX)] for name in batch_names if name.endswith(RERUN_SUFFIX)}
    elements: dict[tuple[int, int], ElementRun] = {}
    for document in await read_batches(run.storage, run.run_dir):
        batch = int(document["batch"])
        for index, task_ids in enumerate(document["elements"]):
            elements[(batch, index)] = ElementRun(batch, index, document["job_ids"][index], list(task_ids),
                                                  dict(document.get("resources") or {}),
                                                  rerun=f"{batch}-{index}" in reruns)
    frames = await _read_journals(run, elements)
    states = {t.task_id: t for t in snapshot.tasks}
    report = RunReport(run.root, run.backend, snapshot, [elements[key] for key in sorted(elements)])
    for element in report.elements:
        for task_id in element.task_ids:
            state = states.get(task_id) or TaskState(task_id, element.batch, element.index, element.job_id, FAILED)
            task = TaskRun(task_id, element, state.state, state.detail)
            task.start, task.end = frames.get(task_id, (None, None))
            report.tasks.append(task)
        element.outcome = _outcome([t.state for t in report.tasks if t.element is element])
    report.tasks.sort(key=lambda t: t.task_id)
    return report


async def _read_journals(run: OpenRun, elements: dict[tuple[int, int], ElementRun]) -> dict[int, tuple[float, float]]:
    """Fill in each element's measurements; each task's (start, end) from its outcome frame."""
    names = [n for n in await run.storage.listdir(run.run_dir.results) if n.endswith((RESULT_SUFFIX, PARTIAL_SUFFIX))]
    names.sort(key=lambda n: n.endswith(RESULT_SUFFIX))  # a complete journal wins over a stale partial one
    contents = await run.storage.read_many([run.run_dir.path("results", n) for n in names])
    times: dict[int, tuple[float, float]] = {}
    for path, data in contents.items():
        name = posixpath.basename(path)
        key = parse_result_name(name[:-len(PARTIAL_SUFFIX)] + RESULT_SUFFIX if name.endswith(PARTIAL_SUFFIX) else name)
        if not data or key is None or key not in elements:
            continue
        try:
            found = [(f.task_id, f.start, f.end) for f in journal.read_frames(data) if f.kind in (journal.OK,
                                                                                                  journal.RAISED)]
            measures = journal.read_measures(data)
        except ValueError:  # another journal version: status says so
            continue
        times.update((task_id, (start, end)) for task_id, start, end in found)
        _measured(elements[key], measures, max((end for _, _, end in found), default=None))
    return times


def _measured(element: ElementRun, measures: list[journal.Measure], last_frame: Optional[float]) -> None:
    element.last_frame = last_frame
    for measure in measures:
        element.node = measure.node
        element.start, element.cpu, element.rss = measure.start, measure.cpu, measure.rss
        if measure.phase == journal.MEASURE_END:
            element.end = measure.end
        elif measure.journal_mtime and measure.batch_mtime:
            submitted = measure.script_mtime if element.rerun and measure.script_mtime else measure.batch_mtime
            element.started_on_fs = measure.journal_mtime
            element.queue_wait = measure.journal_mtime - submitted


def _outcome(states: list[str]) -> str:
    """An element's outcome for the timeline: the worst of its tasks' states."""
    for state in (FAILED, RAISED):
        if state in states:
            return state
    return next((s for s in states if s != SUCCEEDED), SUCCEEDED if states else "")
