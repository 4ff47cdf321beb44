"""Cold bursts: tasks submitted together before any task duration is known, packed under a time budget.

A fresh executor cannot size elements from durations it has not measured. Rather than one task per element
until it has (an array element per ``submit``: the scheduler's dispatch, an interpreter start and the imports,
each time), a cold burst is packed as a cold map is: spread over ``max_workers`` (else 16) elements
(:func:`~clustrix_futures.mapping.sizing.burst_per_element`), each under a time budget of ``element_seconds``.

The budget is kept by *giving back*: once an element has been seen running for ``element_seconds``
(:meth:`Bursts.take_back`, called every monitor cycle), the client takes back every task of it that the element
has not started, and they go out again at once, one task per element (a task that outlived the budget says the
function is slow). Nothing is taken back from an element that has not claimed its first task: it has not
started yet, or its worker is an older one that claims nothing (taking tasks back from it would run them
twice). Exactly one side runs each task: the element *claims* a task as it starts it, and the client
claims it as it takes it back, both by making the task's claim directory ``skip/TASK.B-I``
(:meth:`~clustrix_futures.runfiles.layout.RunDir.claim`), an exclusive ``mkdir`` (atomic on every POSIX and
network filesystem, and over SFTP); the loser passes (the element skips the task; the client leaves it to the
element). A burst of long tasks so costs at most one budget (and a status cycle) more than one task per
element; a burst of short ones finishes inside the budget, in a handful of elements.

The job script of such a batch sets :data:`~clustrix_futures.runfiles.layout.CLAIM_VARIABLE`, so only its
elements pay the claims (one ``mkdir`` per task). Claims need a storage with an exclusive ``mkdir``: a run with
S3 storage packs no cold burst (one task per element until durations are known, as before). An element that runs
again (``retry_states``) first loses the claims of its unfinished tasks (:meth:`Bursts.release`), so its new
attempt can claim them. The batch record (``batches/B.json``) is rewritten without the tasks taken back, so a
client attaching later finds each task in one element only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from clustrix_futures.config import Settings
from clustrix_futures.engine.records import Books, Element, Environment
from clustrix_futures.future import ClusterFuture
from clustrix_futures.remote.storage import Storage
from clustrix_futures.runfiles.layout import is_s3
from clustrix_futures.runfiles.records import batch_document
from clustrix_futures.schedulers.base import QUEUED, RUNNING, ElementKey

log = logging.getLogger(__name__)



def _requeued(future: ClusterFuture) -> None:
    """A task taken back has not started: its job state is queued again. Its future stays running (as a
    ProcessPoolExecutor's call queued for a worker does): a future never goes back from running to pending."""
    future._phase = QUEUED


class Bursts:
    """The elements of cold bursts still watched against their budget; on the engine's loop only."""

    def __init__(self, settings: Settings, storage: Storage, env: Environment, books: Books) -> None:
        self.budget = float(settings["element_seconds"])
        self.storage = storage
        self.env = env
        self.books = books
        mkdir, lstat = getattr(storage, "mkdir", None), getattr(storage, "lstat", None)
        self._mkdir = None if is_s3(env.run_dir.root) or lstat is None else mkdir
        self._lstat = lstat
        self._watched: dict[ElementKey, tuple[Element, Optional[float]]] = {}  # -> its deadline, once running
        self._batches: dict[int, tuple[str, list[Element], dict[str, Any]]] = {}  # claiming batches' records

    @property
    def possible(self) -> bool:
        """Whether this run can give tasks back (its storage has an exclusive mkdir)."""
        return self._mkdir is not None

    def claims(self, batch: int) -> bool:
        """Whether the elements of ``batch`` claim their tasks (its job script must say so)."""
        return batch in self._batches

    def expect(self, batch: int) -> None:
        """``batch`` is about to be submitted as a cold burst: its script claims tasks."""
        self._batches[batch] = ("", [], {})

    def record(self, batch: int, job_id: str, elements: list[Element], resources: dict[str, Any]) -> None:
        """``batch`` was submitted as ``job_id``: watch its elements against the budget."""
        self._batches[batch] = (job_id, elements, resources)
        for element in elements:
            self._watched[element.key] = (element, None)

    async def take_back(self) -> list[int]:
        """The tasks taken back from elements running past their budget (to be submitted again); their batch
        records are rewritten without them."""
        now, due = time.monotonic(), []
        for key, (element, deadline) in list(self._watched.items()):
            if element.done or self.books.live.get(key) is not element:
                del self._watched[key]
            elif deadline is None:
                if element.phase == RUNNING:
                    self._watched[key] = (element, now + self.budget)
            elif now >= deadline:
                due.append(element)
        taken: list[int] = []
        for element in due:
            won = await self._claim(element)
            if won is not None:  # else the element has not started its first task: look again next cycle
                del self._watched[element.key]
                taken += won
        for batch in sorted({e.batch for e in due}):
            job_id, elements, resources = self._batches[batch]
            await self.storage.write(self.env.run_dir.batch_meta(batch), batch_document(
                batch, job_id, [e.task_ids for e in elements], resources))
        if taken:
            log.info("%d tasks not started by their elements within %.1f s go out again, one per element",
                     len(taken), self.budget)
        return taken

    async def _claim(self, element: Element) -> Optional[list[int]]:
        """Claim every task of ``element`` after its first that it has not claimed itself; the ones won. None,
        claiming nothing, while the element has not claimed its first task: it has not started it yet, or its
        worker is of a version that claims nothing (then taking tasks back would run them twice)."""
        assert self._mkdir is not None and self._lstat is not None
        tasks, run_dir = self.books.tasks, self.env.run_dir
        if not element.task_ids or await self._lstat(run_dir.claim(element.task_ids[0], element.batch,
                                                                    element.index)) is None:
            return None
        candidates = [tid for tid in element.task_ids[1:] if tid in tasks and not tasks[tid].future.done()]
        claimed = await asyncio.gather(*(self._mkdir(run_dir.claim(tid, element.batch, element.index))
                                         for tid in candidates), return_exceptions=True)
        taken = [tid for tid, outcome in zip(candidates, claimed) if not isinstance(outcome, BaseException)]
        for tid in taken:
            element.task_ids.remove(tid)
            tasks[tid].element = None
            tasks[tid].packable = False
            _requeued(tasks[tid].future)
        return taken

    async def release(self, element: Element) -> None:
        """Before ``element`` runs again: remove the claims of its unfinished tasks (the ones its last attempt
        had started), so the new attempt can claim them."""
        if not self.claims(element.batch):
            return
        tasks, run_dir = self.books.tasks, self.env.run_dir
        for tid in element.task_ids:
            if tid in tasks and not tasks[tid].future.done():
                await self.storage.remove_tree(run_dir.claim(tid, element.batch, element.index))
