"""The job monitor: one asyncio task that submits arrays and resolves futures.

Each cycle costs O(1) scheduler queries and O(1) listings, whatever the number of tasks:

1. withdraw cancelled work: one ``scancel`` for elements whose every task was cancelled;
2. ONE status query (``squeue``) for every live job, running beside the listing: its report is used by the
   first cycle after it returns; elements seen running mark their futures running;
3. ONE listing of ``results/`` in the run's storage (a directory, or one paginated S3 ``list_objects_v2``);
   new result files are read in one batch and resolve their futures (a cycle whose status report shows
   elements gone from the queue lists once more, after the report: see step 4);
4. elements that left the queue without a result: their final state comes from the scheduler (one query per
   job, only then), the tasks that finished are read from the element's journal, and the rest fail with
   :class:`~clustrix_futures.errors.JobFailedError` carrying the state and the end of the element's stderr.

The interval adapts: fast right after submissions and results, backing off to ``poll_interval`` when idle.
While a thread of this process waits on any ClusterFuture (``result()``, ``wait``, ``as_completed``, a ``map``
being consumed; :func:`clustrix_futures.future.someone_waits`) and elements are live, the pause is at most
``WAITING_INTERVAL`` (0.05 s), or four times the last results listing if that is longer, so listing takes at
most about a fifth of the time: the waiter gets a result soon after its file is written, at the cost of one
listing per pause (over SSH one SFTP round trip; with S3 one LIST request). The status query keeps its own,
slower schedule (step 2).
A failed status query that means "scheduler unreachable" fails nothing; the next cycle tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from clustrix_futures.config import Settings
from clustrix_futures.engine.submission import plan_arrays, resource_key, resources_of
from clustrix_futures.errors import JobFailedError
from clustrix_futures.future import ClusterFuture, someone_waits
from clustrix_futures.mapping.sizing import tasks_per_element
from clustrix_futures.remote.storage import Storage
from clustrix_futures.remote.transport import TransportLost
from clustrix_futures.runfiles.batches import encode_batch
from clustrix_futures.runfiles.journal import read_journal
from clustrix_futures.runfiles.layout import RunDir, job_script, parse_result_name
from clustrix_futures.runfiles.outcomes import loads_outcome
from clustrix_futures.runfiles.records import batch_document, encode_json
from clustrix_futures.schedulers.base import (
    ENDED,
    QUEUED,
    RUNNING,
    ArraySubmission,
    ElementKey,
    FinalState,
    Scheduler,
    SchedulerUnreachable,
    StatusReport,
    SubmitRefused,
)
from clustrix_futures.serialization import resolve

log = logging.getLogger(__name__)

FASTEST_INTERVAL = 0.2
WAITING_INTERVAL = 0.05  # longest pause while a thread waits on a future and elements are live
LISTING_SHARE = 4  # ... unless the results listing is slow: then a pause of this many listings
FIRST_STATUS_GAP = 0.5
STATUS_DRAIN_SECONDS = 5.0  # at the end, how long a status query still running may take
MAX_FAILED_CYCLES = 20  # consecutive; with the back-off between them, about half a minute or more
BATCH_CAP = 100_000
BATCH_WINDOW_CAP = 1.0
LOG_TAIL_BYTES = 4000

StatusAnswer = tuple[Optional[StatusReport], set[ElementKey]]


@dataclass
class Element:
    batch: int
    index: int
    task_ids: list[int]
    job_id: str = ""
    phase: str = QUEUED
    vanished_at: Optional[float] = None
    done: bool = False
    attempts: int = 1

    @property
    def name(self) -> str:
        return f"{self.job_id}_{self.index}"


@dataclass
class Task:
    future: ClusterFuture
    payload: Optional[bytes]
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


class Monitor:
    def __init__(self, settings: Settings, scheduler: Scheduler, storage: Storage, env: Environment) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.storage = storage
        self.env = env
        self.tasks: dict[int, Task] = {}
        self.live: dict[ElementKey, Element] = {}
        self.by_slot: dict[tuple[int, int], Element] = {}  # (batch, index): where its result file points
        self.stats = DurationStats()
        self.cycles = 0
        self.inbox: deque[tuple[int, ClusterFuture, bytes, Optional[Mapping[str, Any]], bool]] = deque()
        self.cancelled: deque[int] = deque()
        self.backlog: list[int] = []  # registered, not yet submitted
        self.stopping = False
        self._wake = asyncio.Event()
        self._batches = 0
        self._seen_results: set[str] = set()
        self._interval = FASTEST_INTERVAL
        self._listing_seconds = 0.0  # how long the last results listing took
        self._failed_cycles = 0
        self._unreachable_since: Optional[float] = None  # since when submissions could not reach the scheduler
        self._status_gap = FIRST_STATUS_GAP
        self._next_status = 0.0
        self._status_query: Optional[asyncio.Future[StatusAnswer]] = None  # asked, not yet used

    # ------------------------------------------------------------ inputs, called on the loop

    def wake(self) -> None:
        self._wake.set()

    def idle(self) -> bool:
        return not self.inbox and all(t.future.done() for t in self.tasks.values())

    async def run(self) -> None:
        """Cycle until stopping and nothing is left to watch. Never dies of one bad cycle."""
        try:
            await self._run_cycles()
        finally:
            query = self._status_query
            if query is not None:  # let it end (a cancelled command can leave its process to the wrong reaper)
                await asyncio.wait({query}, timeout=STATUS_DRAIN_SECONDS)
                query.cancel()
                await asyncio.gather(query, return_exceptions=True)

    async def _run_cycles(self) -> None:
        while not (self.stopping and self.idle()):
            try:
                busy = await self._take_inbox()
                busy |= await self._cycle()
            except TransportLost as exc:
                self.fail_everything(JobFailedError(
                    f"lost the connection to the cluster and could not reconnect: {exc}. The jobs keep running; "
                    f"their run directory is {self.env.run_dir.root}", state="CONNECTION_LOST"))
                return
            except Exception as exc:
                self._failed_cycles += 1
                log.exception("monitor cycle failed (%d in a row); retrying", self._failed_cycles)
                if self._failed_cycles >= MAX_FAILED_CYCLES:
                    self.fail_everything(JobFailedError(
                        f"the job monitor failed {self._failed_cycles} cycles in a row and gave up: {exc!r}. "
                        f"The jobs keep running; their run directory is {self.env.run_dir.root}",
                        state="MONITOR_FAILED"))
                    return
                busy = False
            else:
                self._failed_cycles = 0
            self._interval = FASTEST_INTERVAL if busy else min(self._interval * 1.5,
                                                               self.settings["poll_interval"])
            pause = self._interval
            if self.live and someone_waits():
                pause = min(pause, max(WAITING_INTERVAL, LISTING_SHARE * self._listing_seconds))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            self._wake.clear()

    def fail_everything(self, error: JobFailedError) -> None:
        for task in self.tasks.values():
            task.future.set_exception_if_pending(error)
        while self.inbox:
            self.inbox.popleft()[1].set_exception_if_pending(error)

    # ------------------------------------------------------------ submission

    async def _take_inbox(self) -> bool:
        """Register new submissions (waiting ``batch_window`` while more keep coming), then submit."""
        if self.inbox:
            start, seen = time.monotonic(), -1
            while len(self.inbox) != seen and len(self.inbox) < BATCH_CAP \
                    and time.monotonic() - start < BATCH_WINDOW_CAP:
                seen = len(self.inbox)
                await asyncio.sleep(self.settings["batch_window"])
            while self.inbox:
                task_id, future, payload, overrides, packable = self.inbox.popleft()
                self.tasks[task_id] = Task(future, payload, resources_of(self.settings, overrides), packable)
                self.backlog.append(task_id)
        return await self._submit_backlog()

    async def _submit_backlog(self) -> bool:
        """Submit waiting tasks as arrays. With ``max_workers``, at most that many elements are live at once
        across all arrays: new arrays wait for free slots and are throttled (``%N``) to them."""
        kept = []
        for tid in self.backlog:
            if self.tasks[tid].future.cancelled():
                del self.tasks[tid]
            else:
                kept.append(tid)
        self.backlog = kept
        throttle = self.settings.max_workers
        if throttle is not None:
            throttle -= len(self.live)
            if throttle <= 0:
                return False
        if not self.backlog:
            return False
        groups: dict[tuple[Any, ...], list[int]] = {}
        for task_id in self.backlog:
            task = self.tasks[task_id]
            groups.setdefault((task.packable, *resource_key(task.resources)), []).append(task_id)
        self.backlog = []
        per_element = tasks_per_element(self.settings["tasks_per_element"], self.stats.mean,
                                        self.settings["element_seconds"])
        for (packable, *_), task_ids in groups.items():
            for array in plan_arrays(task_ids, per_element if packable else 1, self.env.max_array_size):
                await self._submit_array(array, throttle)
        return True

    async def _submit_array(self, elements: list[list[int]], throttle: Optional[int]) -> None:
        batch = self._batches
        self._batches += 1
        run_dir, resources = self.env.run_dir, self.tasks[elements[0][0]].resources
        payloads = [[(tid, self.tasks[tid].payload or b"") for tid in element] for element in elements]
        await self.storage.write(run_dir.batch_file(batch), encode_batch(payloads))
        try:
            job_id = await self._submit(batch, len(elements), throttle, resources)
        except SchedulerUnreachable as unreachable:
            since = self._unreachable_since = self._unreachable_since or time.monotonic()
            if time.monotonic() - since < self.settings["reconnect_give_up"]:
                log.warning("scheduler unreachable; these tasks will be submitted again: %s", unreachable)
                self.backlog[:0] = [tid for element in elements for tid in element]
                return
            error = JobFailedError(f"the scheduler could not be reached for {self.settings['reconnect_give_up']:.0f}"
                                   f" s: {unreachable}", state="SUBMIT_FAILED")
            for element in elements:
                for tid in element:
                    self.tasks[tid].future.set_exception_if_pending(error)
            return
        except SubmitRefused as refused:
            error = JobFailedError(f"the scheduler rejected the submission: {refused}", state="SUBMIT_FAILED")
            for element in elements:
                for tid in element:
                    self.tasks[tid].future.set_exception_if_pending(error)
            return
        self._unreachable_since = None
        log.debug("batch %d: job %s, %d elements", batch, job_id, len(elements))
        self._status_soon()
        for index, task_ids in enumerate(elements):
            record = Element(batch, index, task_ids, job_id)
            self.live[(job_id, index)] = self.by_slot[(batch, index)] = record
            for tid in task_ids:
                self.tasks[tid].element = record
                self.tasks[tid].payload = None
        await self.storage.write(run_dir.batch_meta(batch), batch_document(batch, job_id, elements, resources))

    async def _submit(self, batch: int, size: int, throttle: Optional[int], resources: dict[str, Any],
                      start: int = 0) -> str:
        """Submit elements ``start`` .. ``start + size - 1`` of a batch (its payloads are written); the job id."""
        run_dir, placeholder = self.env.run_dir, self.scheduler.index_placeholder
        script = job_script(run_dir, batch, self.env.python, self.settings["setup"] or [], self.env.staged,
                            self.env.script_env)
        return await self.scheduler.submit(ArraySubmission(
            batch, size, run_dir.batch_script(batch), run_dir.log(batch, placeholder, "out"),
            run_dir.log(batch, placeholder, "err"), throttle, resources, start=start), script)

    # ------------------------------------------------------------ one cycle

    async def _cycle(self, fresh_status: bool = False) -> bool:
        """One cycle. The status query runs beside the results listing, so a slow ``squeue`` does not hold
        back results already written; its report is used by the first cycle after it returns. If it shows
        elements gone from the queue, that cycle lists the results once more before settling them: a listing
        taken after the report shows the result of every element that finished before it, and an element
        whose result is there needs no final-state query. ``fresh_status``: wait for a report asked for now
        (:meth:`cancel_queued` needs one)."""
        self.cycles += 1
        await self._withdraw_cancelled()
        if not self.live:
            return await self._submit_backlog()
        answer: Optional[StatusAnswer] = None
        if fresh_status:
            answer = await self._query_status(set(self.live))
        elif self._status_query is None and time.monotonic() >= self._next_status:
            self._status_query = asyncio.ensure_future(self._query_status(set(self.live)))
            self._status_query.add_done_callback(lambda _: self.wake())
        elif self._status_query is not None and self._status_query.done():
            query, self._status_query = self._status_query, None
            answer = query.result()
        busy = await self._collect_results()
        report, asked = answer or (None, set())
        if report is not None:
            busy |= self._mark_running(report)
            if any(report.phases.get(key, ENDED) == ENDED for key in asked if key in self.live):
                busy |= await self._collect_results()
            await self._settle_vanished(report.phases, asked)
        return busy | await self._submit_backlog()

    async def _query_status(self, asked: set[ElementKey]) -> StatusAnswer:
        """ONE status query for the jobs of the ``asked`` elements (the report, None if the scheduler could
        not be asked; and ``asked``). Results are found by listing files, so the scheduler is asked less
        often: soon after a submission, then backing off to ``poll_interval``."""
        report = await self.scheduler.status(sorted({k[0] for k in asked}))
        self._status_gap = min(self._status_gap * 1.5, self.settings["poll_interval"])
        self._next_status = time.monotonic() + self._status_gap
        return report, asked

    def _status_soon(self) -> None:
        self._status_gap = FIRST_STATUS_GAP
        self._next_status = time.monotonic() + FIRST_STATUS_GAP

    def _mark_running(self, report: StatusReport) -> bool:
        changed = False
        for key, phase in report.phases.items():
            element = self.live.get(key)
            if element is None or phase != RUNNING or element.phase == RUNNING:
                continue
            element.phase = RUNNING
            changed = True
            for tid in element.task_ids:
                self.tasks[tid].future.set_running_or_notify_cancel()
        return changed

    async def _collect_results(self) -> bool:
        started = time.monotonic()
        listing = await self.storage.listdir(self.env.run_dir.results)
        self._listing_seconds = time.monotonic() - started
        names = [n for n in listing if n not in self._seen_results]
        wanted = {}
        for name in names:
            parsed = parse_result_name(name)
            if parsed is None:
                continue
            self._seen_results.add(name)
            wanted[self.env.run_dir.result(*parsed)] = parsed
        if not wanted:
            return False
        contents = await self.storage.read_many(list(wanted))
        for path, data in contents.items():
            problem = self._apply_journal(data or b"", path)
            element = self.by_slot.get(wanted[path])
            if element is not None and not element.done:
                final = FinalState("CORRUPTED_RESULT", problem) if problem else FinalState(
                    "COMPLETED", "the element finished but its result file lacks these tasks")
                self._retire(element, final, "")
        return True

    def _apply_journal(self, data: bytes, source: str) -> Optional[str]:
        """Resolve the futures of a result journal's frames; describe the damage if it is corrupted (its
        good frames still count; the tasks after the damage fail with their element, and nothing else)."""
        try:
            for task_id, encoded in read_journal(data):
                task = self.tasks.get(task_id)
                if task is not None:
                    outcome = loads_outcome(encoded)
                    self.stats.add(outcome[3])
                    resolve(task.future, outcome)
        except ValueError as exc:
            log.error("result file %s is corrupted: %s", source, exc)
            return f"result file {source} is corrupted: {exc}"
        return None

    async def _settle_vanished(self, phases: Mapping[ElementKey, str], asked: set[ElementKey]) -> None:
        """Conclude on the ``asked`` elements still live that the report no longer shows (elements submitted
        or run again since it was asked for are not in it, and not concluded on)."""
        now = time.monotonic()
        vanished = []
        for key, element in self.live.items():
            if key not in asked:
                continue
            if phases.get(key, ENDED) != ENDED:
                element.vanished_at = None
                continue
            if element.vanished_at is None:
                element.vanished_at = now
            vanished.append(element)
        if not vanished:
            return
        finals: dict[ElementKey, FinalState] = {}
        unknown_jobs = set()
        for job_id in sorted({e.job_id for e in vanished}):
            states = await self.scheduler.final(job_id)
            if states is None:
                unknown_jobs.add(job_id)
            else:
                finals.update(states)
        grace = self.settings["grace_period"]
        for element in vanished:
            if element.job_id in unknown_jobs:
                continue  # the scheduler could not be asked: ask again next cycle, conclude nothing
            final = finals.get((element.job_id, element.index))
            expected_result = final is None or final.state == "COMPLETED"
            if expected_result and now - (element.vanished_at or now) < grace:
                continue
            await self._end_element(element, final or FinalState(
                "LOST", "the element left the queue without a result and the scheduler no longer knows it"))

    async def _end_element(self, element: Element, final: FinalState) -> None:
        run_dir = self.env.run_dir
        result, partial = run_dir.result(element.batch, element.index), run_dir.partial(element.batch, element.index)
        files, stderr = await asyncio.gather(
            self.storage.read_many([result, partial]),
            self.scheduler.log_tail((element.job_id, element.index), element.batch, LOG_TAIL_BYTES))
        journal = files[result] or files[partial]
        problem = self._apply_journal(journal, result if files[result] else partial) if journal else None
        if problem:
            final = FinalState("CORRUPTED_RESULT", problem)
        retry = final.state in self.settings["retry_states"] and element.attempts <= self.settings["retries"]
        if retry and await self._run_again(element, final):
            return
        tail = stderr[-LOG_TAIL_BYTES:].decode(errors="replace")
        self._retire(element, final, tail)

    async def _run_again(self, element: Element, final: FinalState) -> bool:
        """Resubmit one element (same batch file and script) after a state in ``retry_states``; its tasks
        that already finished are skipped. False if the scheduler refuses."""
        run_dir, batch = self.env.run_dir, element.batch
        await self._skip([tid for tid in element.task_ids
                          if tid not in self.tasks or self.tasks[tid].future.done()])
        try:
            job_id = await self._submit(batch, 1, None, self.tasks[element.task_ids[0]].resources, element.index)
        except (SubmitRefused, SchedulerUnreachable) as refused:
            log.warning("could not run element %s again: %s", element.name, refused)
            return False
        log.warning("element %s ended %s; running it again as job %s (attempt %d)", element.name, final.state,
                    job_id, element.attempts + 1)
        await self.storage.write(run_dir.path("batches", f"{batch}-{element.index}.rerun.json"),
                                 encode_json({"batch": batch, "index": element.index, "job_id": job_id}))
        del self.live[(element.job_id, element.index)]
        element.job_id, element.vanished_at, element.phase = job_id, None, QUEUED
        element.attempts += 1
        self.live[(job_id, element.index)] = element
        self._status_soon()
        return True

    def _retire(self, element: Element, final: FinalState, log_tail: str) -> None:
        """The element is over: fail what it did not deliver, then forget it and its tasks (a finished
        future is the caller's to keep, not ours: holding it would hold its result)."""
        if element.done:  # retired meanwhile by the other coroutine (cancel_queued runs beside run())
            return
        self._fail_unfinished(element, final, log_tail)
        element.done = True
        self.live.pop((element.job_id, element.index), None)
        self.by_slot.pop((element.batch, element.index), None)
        for tid in element.task_ids:
            self.tasks.pop(tid, None)

    def _fail_unfinished(self, element: Element, final: FinalState, log_tail: str) -> None:
        unfinished = [t for t in (self.tasks[tid] for tid in element.task_ids) if not t.future.done()]
        if not unfinished:
            return
        error = JobFailedError(
            f"array element {element.name} ended without this task's result: {final.state}"
            + (f" ({final.detail})" if final.detail else ""),
            state=final.state, job_id=element.name, log_tail=log_tail)
        for task in unfinished:
            task.future.set_exception_if_pending(error)

    # ------------------------------------------------------------ reattaching

    def adopt(self, documents: list[dict[str, Any]],
              make_future: Callable[[int], ClusterFuture]) -> list[ClusterFuture]:
        """Take over the batches recorded in a run directory (:func:`~clustrix_futures.runfiles.records.read_batches`):
        one future per task, in submission order, its element watched as live. Results already written resolve
        in the first cycle."""
        futures: dict[int, ClusterFuture] = {}
        for document in documents:
            batch = document["batch"]
            for index, task_ids in enumerate(document["elements"]):
                job_id = document["job_ids"][index]
                element = Element(batch, index, list(task_ids), job_id)
                self.live[(job_id, index)] = self.by_slot[(batch, index)] = element
                for task_id in task_ids:
                    futures[task_id] = make_future(task_id)
                    self.tasks[task_id] = Task(futures[task_id], None, dict(document["resources"]), True, element)
            self._batches = max(self._batches, batch + 1)
        self._next_status = 0.0
        return [futures[task_id] for task_id in sorted(futures)]

    # ------------------------------------------------------------ cancellation

    async def _skip(self, task_ids: list[int]) -> None:
        """Write the skip markers of tasks whose element may still run."""
        for task_id in task_ids:
            await self.storage.write(self.env.run_dir.skip(task_id), b"")

    async def _withdraw_cancelled(self) -> None:
        elements: dict[ElementKey, Element] = {}
        markers = []
        while self.cancelled:
            task = self.tasks.get(self.cancelled.popleft())
            if task is None or task.element is None or task.element.done:
                continue
            element = task.element
            if all(self.tasks[tid].future.cancelled() for tid in element.task_ids):
                if element.phase == QUEUED:
                    elements[(element.job_id, element.index)] = element
            else:
                markers.append(task.future.task_id)
        await self._skip(markers)
        if elements:
            still_running = await self.scheduler.cancel(sorted(elements))
            await self._skip([tid for key in sorted(still_running) for tid in elements[key].task_ids])
            for element in elements.values():
                self._retire(element, FinalState("CANCELLED"), "")

    async def cancel_queued(self, futures: list[ClusterFuture]) -> None:
        """Cancel every future whose element has not started, as of a fresh status query."""
        await self._take_inbox()
        await self._cycle(fresh_status=True)
        for future in futures:
            if future.cancel():
                self.cancelled.append(future.task_id)
        await self._withdraw_cancelled()
