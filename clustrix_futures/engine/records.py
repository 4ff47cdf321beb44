"""What the cluster engine records of each task and array element, and what it learned at start-up.

:class:`Books` holds the tasks not yet forgotten and the live elements; submission
(:mod:`clustrix_futures.engine.submission`) adds to it, the monitor (:mod:`clustrix_futures.engine.monitor`)
resolves futures from result journals through it and retires elements from it.
Both run on the engine's event loop only, so nothing here is locked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from clustrix_futures.errors import JobFailedError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.runfiles.layout import RunDir
from clustrix_futures.runfiles.outcomes import loads_outcome
from clustrix_futures.runfiles.parts import JournalCursor
from clustrix_futures.schedulers.base import QUEUED, ElementKey, FinalState
from clustrix_futures.serialization import resolve

log = logging.getLogger(__name__)


@dataclass
class Element:
    """One array element: the tasks it runs, and the job (its latest attempt) that runs them."""

    batch: int
    index: int
    task_ids: list[int]
    job_id: str = ""
    phase: str = QUEUED
    vanished_at: Optional[float] = None  # when a status report first no longer showed it
    done: bool = False
    attempts: int = 1
    resumes: int = 0  # of its attempts, those that ran again from a task's checkpoint
    journal: Optional[JournalCursor] = None  # how far its journal was read (this attempt's)
    pieces: int = 0  # S3: the numbered pieces of its journal read (engine/streaming.py)
    resources: Optional[dict[str, Any]] = None  # those of its latest run, where right-sizing changed them
    runs: list[str] = field(default_factory=list)  # right-sizing: each earlier run's size and how it ended

    @property
    def name(self) -> str:
        return f"{self.job_id}_{self.index}"

    @property
    def key(self) -> ElementKey:
        return (self.job_id, self.index)


@dataclass
class Task:
    future: ClusterFuture
    payload: Optional[bytes]  # dropped once written to its batch file
    resources: dict[str, Any]
    packable: bool = True  # False: a map chunk, sized to run alone
    element: Optional[Element] = None


@dataclass
class Environment:
    """What the engine learned at start-up."""

    run_dir: RunDir
    python: str
    staged: bool
    max_array_size: Optional[int]
    script_env: dict[str, str] = field(default_factory=dict)  # exported by every job script


@dataclass
class DurationStats:
    """Mean task duration, for packing; updated from every outcome."""

    count: int = 0
    total: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds

    @property
    def mean(self) -> Optional[float]:
        return self.total / self.count if self.count else None


@dataclass
class Books:
    """The tasks not yet forgotten, and the elements still watched: by job (``live``) and by the batch and
    index their result file is named after (``by_slot``)."""

    tasks: dict[int, Task] = field(default_factory=dict)
    live: dict[ElementKey, Element] = field(default_factory=dict)
    by_slot: dict[tuple[int, int], Element] = field(default_factory=dict)
    stats: DurationStats = field(default_factory=DurationStats)
    on_watch: Optional[Callable[[Element], None]] = None  # told of each element watched (the output forwarder)

    def watch(self, element: Element) -> None:
        """Watch a submitted, adopted or resubmitted element; its tasks point to it, and their futures know its
        job id and phase."""
        self.live[element.key] = self.by_slot[(element.batch, element.index)] = element
        kept = element.journal.held if element.journal else None  # parts of map chunks that go on from them
        element.journal, element.pieces = (JournalCursor(kept) if kept else None), 0  # a new attempt, a new journal
        if self.on_watch is not None:
            self.on_watch(element)
        for task_id in element.task_ids:
            task = self.tasks.get(task_id)
            if task is not None:
                task.element = element
                task.future._watched(element.name, (element.batch, element.index), element.phase)

    def cursor(self, element: Element) -> JournalCursor:
        """How far the element's journal was read."""
        if element.journal is None:
            element.journal = JournalCursor()
        return element.journal

    def apply_journal(self, data: bytes, source: str, element: Optional[Element] = None) -> Optional[str]:
        """Resolve the futures of a result journal's frames (the whole journal: of an ``element``, what was not
        read of it yet); describe the damage if it is corrupted (its good frames still count; the tasks after
        the damage fail with their element, and nothing else)."""
        cursor = JournalCursor() if element is None else self.cursor(element)
        return self._apply(cursor, data[cursor.offset:], source)

    def apply_appended(self, element: Element, data: bytes, source: str) -> Optional[str]:
        """As :meth:`apply_journal`, for the bytes of a running element's journal from where it was read."""
        return self._apply(self.cursor(element), data, source)

    def _apply(self, cursor: JournalCursor, data: bytes, source: str) -> Optional[str]:
        try:
            for task_id, encoded, part in cursor.feed(data):
                task = self.tasks.get(task_id)
                if task is None:
                    continue
                if part is not None:
                    cursor.held.part(task_id, task.future, part)
                    continue
                assert encoded is not None
                outcome = cursor.held.outcome(task_id, loads_outcome(encoded))
                self.stats.add(outcome[3])
                resolve(task.future, outcome)
        except ValueError as exc:
            log.error("result file %s is corrupted: %s", source, exc)
            return f"result file {source} is corrupted: {exc}"
        return None

    def fail(self, task_ids: list[int], error: JobFailedError) -> None:
        for task_id in task_ids:
            self.tasks[task_id].future.set_exception_if_pending(error)

    def finished_of(self, element: Element) -> list[int]:
        """The element's tasks that need not run again: resolved, or forgotten."""
        return [tid for tid in element.task_ids if tid not in self.tasks or self.tasks[tid].future.done()]

    def retire(self, element: Element, final: FinalState, log_tail: str) -> None:
        """The element is over: fail what it did not deliver, then forget it and its tasks (a finished
        future is the caller's to keep, not ours: holding it would hold its result)."""
        if element.done:  # retired meanwhile by the other coroutine (cancel_queued runs beside run())
            return
        unfinished = [tid for tid in element.task_ids if not self.tasks[tid].future.done()]
        if unfinished:
            self.fail(unfinished, JobFailedError(
                f"array element {element.name} ended without this task's result: {final.state}"
                + (f" ({final.detail})" if final.detail else ""),
                state=final.state, job_id=element.name, log_tail=log_tail))
        element.done = True
        self.live.pop(element.key, None)
        self.by_slot.pop((element.batch, element.index), None)
        for task_id in element.task_ids:
            self.tasks.pop(task_id, None)
