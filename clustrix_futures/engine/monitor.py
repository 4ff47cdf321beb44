"""The job monitor: one asyncio task that submits arrays and resolves futures.

Each cycle costs O(1) scheduler queries and O(1) listings, whatever the number of tasks:

1. withdraw cancelled work: one ``scancel`` for elements whose every task was cancelled;
2. ONE status query (``squeue``) for every live job, running beside the listing: its report is used by the
   first cycle after it returns; elements seen running mark their futures running;
3. ONE listing of ``results/`` in the run's storage (a directory, or one paginated S3 ``list_objects_v2``);
   new result files are read in one batch and resolve their futures (a cycle whose status report shows elements
   gone from the queue lists once more, after the report: see step 4); then running elements' journals, for
   map chunks consumed item by item, from where they were read last (:mod:`clustrix_futures.engine.streaming`);
4. elements that left the queue without a result: their final state comes from the scheduler (one query per
   job, only then), the tasks that finished are read from the element's journal, and the rest fail with
   :class:`~clustrix_futures.errors.JobFailedError` carrying the state and the end of the element's stderr.

The interval adapts: fast right after submissions and results, backing off to ``poll_interval`` when idle. While a
thread of this process waits on any ClusterFuture (``result()``, ``wait``, ``as_completed``, a ``map`` being
consumed; :func:`clustrix_futures.future.someone_waits`) and elements are live, the pause is at most
``WAITING_INTERVAL`` (0.05 s), or four times the last results listing if that is longer, so listing takes at most
about a fifth of the time: the waiter gets a result soon after its file is written, at the cost of one listing per
pause (over SSH one SFTP round trip; with S3 one LIST request). The status query keeps its own, slower schedule
(step 2). A failed status query that means "scheduler unreachable" fails nothing; the next cycle tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Optional

from clustrix_futures.config import Settings
from clustrix_futures.engine.records import Books, Element, Environment
from clustrix_futures.engine.retrying import Retrying
from clustrix_futures.engine.streaming import RunningJournals
from clustrix_futures.engine.submission import JobScript, Submission
from clustrix_futures.errors import JobFailedError
from clustrix_futures.future import ClusterFuture, someone_waits
from clustrix_futures.remote.storage import Storage
from clustrix_futures.remote.transport import TransportLost
from clustrix_futures.runfiles.layout import parse_result_name
from clustrix_futures.schedulers.base import ENDED, QUEUED, RUNNING, ElementKey, FinalState, Scheduler, StatusReport

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
Submitted = tuple[int, ClusterFuture, bytes, Optional[Mapping[str, Any]], bool]


class Monitor:
    """Watches one run: submits its tasks as arrays and resolves their futures, in :meth:`run` on one loop.

    Work arrives from other threads only through :meth:`submit`, :meth:`cancel` and :meth:`stop`; they may
    be called before :meth:`run` starts (the work then waits for it) and while it runs. That is the only
    state shared across threads, and it is guarded so:

    - ``_submissions`` and ``_cancellations`` are deques: any thread appends, only the loop pops (both atomic
      in CPython, so no lock is taken); ``_stop_requested`` is a :class:`threading.Event`;
    - ``_loop`` is set once, by :meth:`run`, before it first reads the deques. A caller appends first and reads
      ``_loop`` after: if it is still None, :meth:`run` will see the work; else the caller wakes the loop.

    Everything else (the books of tasks and elements, the submission backlog, the status schedule) is
    touched on the loop only: by :meth:`run`, and by :meth:`adopt`, :meth:`cancel_queued` and
    :meth:`fail_everything`, which must be called on the loop too.
    """

    def __init__(self, settings: Settings, scheduler: Scheduler, storage: Storage, env: Environment) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.storage = storage
        self.env = env
        self.books = Books()
        self.cycles = 0
        self._submission = Submission(settings, scheduler, storage, env, self.books, self._status_soon)
        self._retrying = Retrying(settings, scheduler)
        self._submissions: deque[Submitted] = deque()
        self._cancellations: deque[int] = deque()
        self._stop_requested = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake = asyncio.Event()
        self._seen_results: set[str] = set()
        self._interval = FASTEST_INTERVAL
        self._listing_seconds = 0.0  # how long the last results listing took
        self._failed_cycles = 0
        self._status_gap = FIRST_STATUS_GAP
        self._next_status = 0.0
        self._status_query: Optional[asyncio.Future[StatusAnswer]] = None  # asked, not yet used
        self._running = RunningJournals(storage, env.run_dir, self.books)

    # ------------------------------------------------------------ from any thread

    def submit(self, task_id: int, future: ClusterFuture, payload: bytes,
               resources: Optional[Mapping[str, Any]], packable: bool) -> None:
        """Queue a task for submission; ``resources`` override the executor's (a resource view's)."""
        self._submissions.append((task_id, future, payload, resources, packable))
        self._wake_loop()

    def cancel(self, task_id: int) -> None:
        """A task's future was cancelled: withdraw its element if nothing else of it runs, else skip it."""
        self._cancellations.append(task_id)
        self._wake_loop()

    def stop(self) -> None:
        """Have :meth:`run` return once every task it was given is resolved."""
        self._stop_requested.set()
        self._wake_loop()

    def _wake_loop(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------ what tests and reports read (on the loop)

    @property
    def batches(self) -> int:
        """How many batch files (arrays) this run has written."""
        return self._submission.batches

    def job_script(self, overrides: Optional[Mapping[str, Any]]) -> JobScript:
        """The next array's command and script (:meth:`Submission.preview`; reads one counter: any thread)."""
        return self._submission.preview(overrides)

    @property
    def results_read(self) -> int:
        """How many result files have been read."""
        return len(self._seen_results)

    # ------------------------------------------------------------ on the loop

    def idle(self) -> bool:
        return not self._submissions and all(t.future.done() for t in self.books.tasks.values())

    async def run(self) -> None:
        """Cycle until stopping and nothing is left to watch. Never dies of one bad cycle."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._run_cycles()
        finally:
            query = self._status_query
            if query is not None:  # let it end (a cancelled command can leave its process to the wrong reaper)
                await asyncio.wait({query}, timeout=STATUS_DRAIN_SECONDS)
                query.cancel()
                await asyncio.gather(query, return_exceptions=True)

    async def _run_cycles(self) -> None:
        while not (self._stop_requested.is_set() and self.idle()):
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
            await self._pause(busy)

    async def _pause(self, busy: bool) -> None:
        """Wait for the next cycle: see the module docstring; a wake-up ends the wait early."""
        self._interval = FASTEST_INTERVAL if busy else min(self._interval * 1.5, self.settings["poll_interval"])
        pause = self._interval
        if self.books.live and someone_waits():
            pause = min(pause, max(WAITING_INTERVAL, LISTING_SHARE * self._listing_seconds))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), pause)
        self._wake.clear()

    def fail_everything(self, error: JobFailedError) -> None:
        """Fail every pending future, registered or still in the inbox."""
        for task in self.books.tasks.values():
            task.future.set_exception_if_pending(error)
        while self._submissions:
            self._submissions.popleft()[1].set_exception_if_pending(error)

    async def _take_inbox(self) -> bool:
        """Register new submissions (waiting ``batch_window`` while more keep coming), then submit."""
        inbox = self._submissions
        if inbox:
            start, seen = time.monotonic(), -1
            while len(inbox) != seen and len(inbox) < BATCH_CAP and time.monotonic() - start < BATCH_WINDOW_CAP:
                seen = len(inbox)
                await asyncio.sleep(self.settings["batch_window"])
            while inbox:
                self._submission.register(*inbox.popleft())
        return await self._submission.submit_backlog()

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
        live = self.books.live
        if not live:
            return await self._submission.submit_backlog()
        answer: Optional[StatusAnswer] = None
        if fresh_status:
            answer = await self._query_status()
        elif self._status_query is None and time.monotonic() >= self._next_status:
            self._status_query = asyncio.ensure_future(self._query_status())
            self._status_query.add_done_callback(lambda _: self._wake.set())
        elif self._status_query is not None and self._status_query.done():
            query, self._status_query = self._status_query, None
            answer = query.result()
        busy = await self._collect_results()
        report, asked = answer or (None, set())
        if report is not None:
            busy |= self._mark_running(report)
            if any(report.phases.get(key, ENDED) == ENDED for key in asked if key in live):
                busy |= await self._collect_results()
            await self._settle_vanished(report.phases, asked)
        return busy | await self._submission.submit_backlog()

    async def _query_status(self) -> StatusAnswer:
        """ONE status query for the live elements' jobs (the report, None if the scheduler could not be asked;
        and the elements asked about), soon after a submission, then backing off to ``poll_interval``. Taken as
        it starts (no await before): a job the scheduler knows but is not asked about is one we are done with."""
        asked = set(self.books.live)
        report = await self.scheduler.status(sorted({k[0] for k in asked}))
        self._status_gap = min(self._status_gap * 1.5, self.settings["poll_interval"])
        self._next_status = time.monotonic() + self._status_gap
        return report, asked

    def _status_soon(self) -> None:
        self._status_gap, self._next_status = FIRST_STATUS_GAP, time.monotonic() + FIRST_STATUS_GAP

    def _mark_running(self, report: StatusReport) -> bool:
        changed = False
        for key, phase in report.phases.items():
            element = self.books.live.get(key)
            if element is None or phase != RUNNING or element.phase == RUNNING:
                continue
            element.phase = RUNNING
            changed = True
            for tid in element.task_ids:
                self.books.tasks[tid].future._started(RUNNING)
        return changed

    async def _collect_results(self) -> bool:
        started, wanted = time.monotonic(), {}
        listing = await self.storage.listdir(self.env.run_dir.results)
        self._listing_seconds = time.monotonic() - started
        for name in listing:
            parsed = None if name in self._seen_results else parse_result_name(name)
            if parsed is None:
                continue
            self._seen_results.add(name)
            wanted[self.env.run_dir.result(*parsed)] = parsed
        if not wanted:
            return await self._running.read(listing)
        contents = await self.storage.read_many(list(wanted))
        for path, data in contents.items():
            element = self.books.by_slot.get(wanted[path])
            problem = self.books.apply_journal(data or b"", path, element)
            if element is not None and not element.done:
                final = FinalState("CORRUPTED_RESULT", problem) if problem else FinalState(
                    "COMPLETED", "the element finished but its result file lacks these tasks")
                self.books.retire(element, final, "")
        return await self._running.read(listing) or True

    # ------------------------------------------------------------ elements that left the queue

    async def _settle_vanished(self, phases: Mapping[ElementKey, str], asked: set[ElementKey]) -> None:
        """Conclude on the ``asked`` elements still live that the report no longer shows (elements submitted
        or run again since it was asked for are not in it, and not concluded on)."""
        now = time.monotonic()
        vanished = self._vanished(phases, asked, now)
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
            final = finals.get(element.key)
            expected_result = final is None or final.state == "COMPLETED"
            if expected_result and now - (element.vanished_at or now) < grace:
                continue
            await self._end_element(element, final or FinalState(
                "LOST", "the element left the queue without a result and the scheduler no longer knows it"))
        await self._submission.submit_reruns()

    def _vanished(self, phases: Mapping[ElementKey, str], asked: set[ElementKey], now: float) -> list[Element]:
        """The ``asked`` live elements the report shows ended (each noted with when it was first seen so);
        the others shown again are no longer counted as vanished."""
        vanished = []
        for key, element in self.books.live.items():
            if key not in asked:
                continue
            if phases.get(key, ENDED) != ENDED:
                element.vanished_at = None
                continue
            if element.vanished_at is None:
                element.vanished_at = now
            vanished.append(element)
        return vanished

    async def _end_element(self, element: Element, final: FinalState) -> None:
        run_dir = self.env.run_dir
        result, partial = run_dir.result(element.batch, element.index), run_dir.partial(element.batch, element.index)
        files, stderr = await asyncio.gather(
            self.storage.read_many([result, partial]),
            self.scheduler.log_tail(element.key, element.batch, LOG_TAIL_BYTES))
        if element.done:  # retired meanwhile by the other coroutine (cancel_queued runs beside run())
            return
        journal = files[result] or files[partial]
        problem = self.books.apply_journal(journal, result if files[result] else partial, element) if journal else None
        if problem:
            final = FinalState("CORRUPTED_RESULT", problem)
        again, grown, final = await self._retrying.decide(element, final, self._submission.resources(element))
        tail = stderr[-LOG_TAIL_BYTES:].decode(errors="replace")
        if not (again and self._submission.run_again(element, final, grown, tail)):
            self.books.retire(element, final, tail)

    # ------------------------------------------------------------ reattaching

    def adopt(self, documents: list[dict[str, Any]],
              make_future: Callable[[int], ClusterFuture]) -> list[ClusterFuture]:
        """Take over the batches recorded in a run directory (:func:`~clustrix_futures.runfiles.records.read_batches`):
        one future per task, in submission order, its element watched as live. Results already written resolve
        in the first cycle."""
        futures = self._submission.adopt(documents, make_future)
        self._next_status = 0.0
        return futures

    # ------------------------------------------------------------ cancellation

    async def _skip(self, task_ids: list[int]) -> None:
        """Write the skip markers of tasks whose element may still run."""
        for task_id in task_ids:
            await self.storage.write(self.env.run_dir.skip(task_id), b"")

    async def _withdraw_cancelled(self) -> None:
        elements: dict[ElementKey, Element] = {}
        markers = []
        tasks = self.books.tasks
        while self._cancellations:
            task = tasks.get(self._cancellations.popleft())
            if task is None or task.element is None or task.element.done:
                continue
            element = task.element
            if all(tasks[tid].future.cancelled() for tid in element.task_ids):
                if element.phase == QUEUED:
                    elements[element.key] = element
            else:
                markers.append(task.future.task_id)
        await self._skip(markers)
        if elements:
            still_running = await self.scheduler.cancel(sorted(elements))
            await self._skip([tid for key in sorted(still_running) for tid in elements[key].task_ids])
            for element in elements.values():
                self.books.retire(element, FinalState("CANCELLED"), "")

    async def cancel_queued(self, futures: list[ClusterFuture]) -> None:
        """Cancel every future whose element has not started, as of a fresh status query."""
        await self._take_inbox()
        await self._cycle(fresh_status=True)
        for future in futures:
            if future.cancel():
                self._cancellations.append(future.task_id)
        await self._withdraw_cancelled()
