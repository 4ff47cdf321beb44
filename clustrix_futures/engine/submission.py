"""How queued tasks become array jobs: grouped by resources, packed into elements, split to the array limit.

The plan is pure functions over task ids (:func:`plan_arrays` and friends). :class:`Submission` does the I/O:
it writes each array's batch file, submits it, records it, and runs a failed element again. The monitor
owns one and drives it from its loop.
"""

from __future__ import annotations

import logging
import math
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from clustrix_futures.config import Settings
from clustrix_futures.engine.bursts import Bursts
from clustrix_futures.engine.records import Books, Element, Environment, Task
from clustrix_futures.errors import ConfigError, JobFailedError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.mapping.sizing import MIN_MAP_CHUNKS, burst_per_element, tasks_per_element
from clustrix_futures.remote.storage import Storage
from clustrix_futures.runfiles.batches import encode_batch
from clustrix_futures.runfiles.layout import CLAIM_VARIABLE, job_script
from clustrix_futures.runfiles.records import batch_document, encode_json
from clustrix_futures.schedulers import SCHEDULERS, capabilities
from clustrix_futures.schedulers.base import (
    QUEUED,
    ArraySubmission,
    FinalState,
    Scheduler,
    SchedulerUnreachable,
    SubmitRefused,
)

log = logging.getLogger(__name__)

# The options each array is submitted with; "pe" (Grid Engine) and "flavor" (PBS) are read by those backends.
RESOURCE_OPTIONS = ("cpus", "mem", "time", "partition", "account", "gpus", "nodes", "job_name", "scheduler_args",
                    "pe", "flavor")


@dataclass(frozen=True)
class JobScript:
    """What ``ex.job_script()`` returns: the submission command (``argv``; ``command`` is it as one shell line)
    and the batch script's text, for the executor's next array of one element. The script runs the worker
    on batch file ``batches/B.pkl`` of the run directory, and is written at ``path`` when submitted."""

    argv: list[str]
    script: str
    path: str

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def __str__(self) -> str:
        return f"{self.command}\n\n{self.script}"


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


def plan_burst(task_ids: Sequence[int], slots: int, max_array_size: Optional[int]) -> list[list[list[int]]]:
    """Split a cold burst (:mod:`~clustrix_futures.engine.bursts`) into arrays: the first task alone, so it
    starts as soon as it would have one task per element (and what follows it is not held behind it), the
    rest spread over ``slots - 1`` elements (at least one), as evenly as :func:`plan_arrays` spreads them."""
    if not task_ids:
        return []
    rest = list(task_ids[1:])
    elements = [[task_ids[0]]]
    if rest:
        per_element = burst_per_element(len(rest), max(1, slots - 1))
        elements += [element for array in plan_arrays(rest, per_element, None) for element in array]
    limit = max_array_size or len(elements)
    return [elements[i:i + limit] for i in range(0, len(elements), limit)]


class Submission:
    """Registered tasks waiting for submission (the backlog), and the arrays that take them to the scheduler.

    Runs on the engine's loop only, as the monitor's submission half: ``books`` is the monitor's, and
    ``on_submitted`` is called after each accepted submission (so the monitor asks for a status soon).
    """

    def __init__(self, settings: Settings, scheduler: Scheduler, storage: Storage, env: Environment,
                 books: Books, on_submitted: Callable[[], None]) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.storage = storage
        self.env = env
        self.books = books
        self.batches = 0  # batch files written (the next batch's number)
        self._on_submitted = on_submitted
        self._backlog: list[int] = []  # registered, not yet submitted
        self._unreachable_since: Optional[float] = None  # since when submissions could not reach the scheduler
        self.bursts = Bursts(settings, storage, env, books)
        self._reruns: list[_Rerun] = []  # elements to run again, submitted at the end of the cycle
        self._index_lists = settings.backend in SCHEDULERS and capabilities(settings.backend).index_lists

    def register(self, task_id: int, future: ClusterFuture, payload: bytes,
                 overrides: Optional[Mapping[str, Any]], packable: bool) -> None:
        self.books.tasks[task_id] = Task(future, payload, resources_of(self.settings, overrides), packable)
        self._backlog.append(task_id)

    def adopt(self, documents: list[dict[str, Any]],
              make_future: Callable[[int], ClusterFuture]) -> list[ClusterFuture]:
        """Record the arrays of an attached run (their batch documents) as submitted; see ``Monitor.adopt``."""
        futures: dict[int, ClusterFuture] = {}
        for document in documents:
            batch = document["batch"]
            for index, task_ids in enumerate(document["elements"]):
                for task_id in task_ids:
                    futures[task_id] = make_future(task_id)
                    self.books.tasks[task_id] = Task(futures[task_id], None, dict(document["resources"]))
                self.books.watch(Element(batch, index, list(task_ids), document["job_ids"][index]))
            self.batches = max(self.batches, batch + 1)
        return [futures[task_id] for task_id in sorted(futures)]

    async def submit_backlog(self) -> bool:
        """Submit waiting tasks as arrays (False if none was due). With ``max_workers``, at most that many
        elements are live at once across all arrays: new arrays wait for free slots and are throttled (``%N``)
        to them. Tasks that elements of a cold burst did not start within their budget come first
        (:mod:`~clustrix_futures.engine.bursts`)."""
        self._backlog[:0] = await self.bursts.take_back()
        tasks = self.books.tasks
        kept = []
        for task_id in self._backlog:
            if tasks[task_id].future.cancelled():
                del tasks[task_id]
            else:
                kept.append(task_id)
        self._backlog = kept
        throttle = self.settings.max_workers
        if throttle is not None:
            throttle -= len(self.books.live)
            if throttle <= 0:
                return False
        if not self._backlog:
            return False
        groups: dict[tuple[Any, ...], list[int]] = {}
        for task_id in self._backlog:
            task = tasks[task_id]
            groups.setdefault((task.packable, *resource_key(task.resources)), []).append(task_id)
        self._backlog = []
        setting, mean = self.settings["tasks_per_element"], self.books.stats.mean
        cold = setting == "auto" and mean is None and self.bursts.possible and not self.settings.max_tasks_per_child
        per_element = tasks_per_element(setting, mean, self.settings["element_seconds"])
        per_element = min(per_element, self.settings.max_tasks_per_child or per_element)  # as a worker's limit
        for (packable, *_), task_ids in groups.items():
            if packable and cold:
                arrays = plan_burst(task_ids, self.settings.max_workers or MIN_MAP_CHUNKS, self.env.max_array_size)
            else:
                arrays = plan_arrays(task_ids, per_element if packable else 1, self.env.max_array_size)
            for array in arrays:
                await self._submit_array(array, throttle, packable and cold and any(len(e) > 1 for e in array))
        return True

    async def _submit_array(self, elements: list[list[int]], throttle: Optional[int], cold: bool = False) -> None:
        """Write one array's batch file and submit it; ``cold``: a cold burst's, whose elements claim tasks
        (payloads are kept until each element ends, for the tasks it may give back)."""
        batch = self.batches
        self.batches += 1
        if cold:
            self.bursts.expect(batch)
        tasks, resources = self.books.tasks, self.books.tasks[elements[0][0]].resources
        payloads = [[(tid, tasks[tid].payload or b"") for tid in element] for element in elements]
        await self.storage.write(self.env.run_dir.batch_file(batch), encode_batch(payloads))
        try:
            job_id = await self._submit(batch, len(elements), throttle, resources)
        except SchedulerUnreachable as unreachable:
            self._unreachable(elements, unreachable)
            return
        except SubmitRefused as refused:
            self.books.fail([tid for element in elements for tid in element], JobFailedError(
                f"the scheduler rejected the submission: {refused}", state="SUBMIT_FAILED"))
            return
        self._unreachable_since = None
        log.debug("batch %d: job %s, %d elements", batch, job_id, len(elements))
        self._on_submitted()
        watched = [Element(batch, index, task_ids, job_id) for index, task_ids in enumerate(elements)]
        for element in watched:
            self.books.watch(element)
            for tid in [] if cold else element.task_ids:
                tasks[tid].payload = None
        if cold:
            self.bursts.record(batch, job_id, watched, resources)
        await self.storage.write(self.env.run_dir.batch_meta(batch),
                                 batch_document(batch, job_id, elements, resources))

    def _unreachable(self, elements: list[list[int]], unreachable: SchedulerUnreachable) -> None:
        """Put the tasks back at the head of the backlog, unless the scheduler has been unreachable for
        ``reconnect_give_up`` seconds: then they fail."""
        since = self._unreachable_since = self._unreachable_since or time.monotonic()
        task_ids = [tid for element in elements for tid in element]
        if time.monotonic() - since < self.settings["reconnect_give_up"]:
            log.warning("scheduler unreachable; these tasks will be submitted again: %s", unreachable)
            self._backlog[:0] = task_ids
            return
        self.books.fail(task_ids, JobFailedError(
            f"the scheduler could not be reached for {self.settings['reconnect_give_up']:.0f} s: {unreachable}",
            state="SUBMIT_FAILED"))

    def _job(self, batch: int, size: int, throttle: Optional[int], resources: Mapping[str, Any],
             start: int = 0) -> tuple[ArraySubmission, str]:
        """The array job of elements ``start`` .. ``start + size - 1`` of a batch, and its script."""
        run_dir, placeholder = self.env.run_dir, self.scheduler.index_placeholder
        env = {**self.env.script_env, CLAIM_VARIABLE: "1"} if self.bursts.claims(batch) else self.env.script_env
        script = job_script(run_dir, batch, self.env.python, self.settings["setup"] or [], self.env.staged, env)
        return ArraySubmission(batch, size, run_dir.batch_script(batch), run_dir.log(batch, placeholder, "out"),
                               run_dir.log(batch, placeholder, "err"), throttle, resources, start=start), script

    async def _submit(self, batch: int, size: int, throttle: Optional[int], resources: dict[str, Any],
                      start: int = 0) -> str:
        """Submit elements ``start`` .. ``start + size - 1`` of a batch (its payloads are written); the job id."""
        return await self.scheduler.submit(*self._job(batch, size, throttle, resources, start))

    def preview(self, overrides: Optional[Mapping[str, Any]]) -> JobScript:
        """The command and script the next array (one element, of tasks with these resources) would be
        submitted with; nothing is written or run."""
        job, script = self._job(self.batches, 1, self.settings.max_workers, resources_of(self.settings, overrides))
        argv_of = getattr(self.scheduler, "submit_argv", None)
        if argv_of is None:
            raise ConfigError(f"job_script() shows the command and script of a command scheduler (slurm, sge, "
                              f"pbs, ssh); the {self.scheduler.name} backend submits through its API")
        return JobScript(argv_of(job), script, job.script)

    def resources(self, element: Element) -> dict[str, Any]:
        """The resources the element's latest run asked for."""
        return element.resources or self.books.tasks[element.task_ids[0]].resources

    def run_again(self, element: Element, final: FinalState, resources: Optional[dict[str, Any]] = None,
                  log_tail: str = "") -> bool:
        """Queue one element to run again (same batch file and script) after a state in ``retry_states``, with
        the ``resources`` right-sizing chose, if any; it goes out with the others of this cycle
        (:meth:`submit_reruns`), its tasks that finished passed over (their skip markers are written first).
        False if there is nothing to run."""
        if not element.task_ids:  # a cold burst's element whose every task was taken back: nothing to run
            return False
        self._reruns.append(_Rerun(element, final, resources, log_tail))
        return True

    async def submit_reruns(self) -> None:
        """Submit the elements :meth:`run_again` queued: those of one batch asking the same resources as one
        array of their indices where the scheduler takes index lists, else each alone. The elements of an
        array the scheduler refuses are retired with the state they ended in."""
        groups: dict[tuple[Any, ...], list[_Rerun]] = {}
        for rerun in self._reruns:
            before = self.resources(rerun.element)
            rerun.element.resources = rerun.resources or rerun.element.resources
            rerun.grown = {key: value for key, value in (rerun.resources or {}).items() if value != before.get(key)}
            key = (rerun.element.batch, *resource_key(self.resources(rerun.element)))
            groups.setdefault(key if self._index_lists else (id(rerun),), []).append(rerun)
        self._reruns = []
        for group in groups.values():
            await self._rerun(sorted(group, key=lambda rerun: rerun.element.index))

    async def _rerun(self, group: list[_Rerun]) -> None:
        batch, run_dir = group[0].element.batch, self.env.run_dir
        for rerun in group:
            for task_id in self.books.finished_of(rerun.element):
                await self.storage.write(run_dir.skip(task_id), b"")
            await self.bursts.release(rerun.element)
            read = rerun.element.journal.offset if rerun.element.journal else 0  # how much of it the books have
            await self.storage.write(run_dir.journal_read(batch, rerun.element.index), str(read).encode())
        indices = tuple(rerun.element.index for rerun in group)
        job, script = self._job(batch, len(indices), None, self.resources(group[0].element), indices[0])
        try:
            job_id = await self.scheduler.submit(replace(job, indices=indices if len(indices) > 1 else ()), script)
        except (SubmitRefused, SchedulerUnreachable) as refused:
            log.warning("could not run elements %s of batch %d again: %s", list(indices), batch, refused)
            for rerun in group:
                self.books.retire(rerun.element, rerun.final, rerun.log_tail)
            return
        for rerun in group:  # no await in between: see Monitor._query_status
            self._resubmitted(rerun, job_id)
        for index in indices:
            await self.storage.write(run_dir.rerun_meta(batch, index),
                                     encode_json({"batch": batch, "index": index, "job_id": job_id}))
        self._on_submitted()

    def _resubmitted(self, rerun: _Rerun, job_id: str) -> None:
        element = rerun.element
        log.warning("element %s ended %s; running it again as job %s (attempt %d)%s", element.name,
                    rerun.final.state, job_id, element.attempts + 1, f" with {rerun.grown}" if rerun.grown else "")
        del self.books.live[element.key]
        element.job_id, element.vanished_at, element.phase = job_id, None, QUEUED
        element.attempts += 1
        self.books.watch(element)


@dataclass
class _Rerun:
    """An element that runs again, queued until the end of the monitor's cycle: how it ended, what it asks
    for now, and its stderr's tail (for its tasks' error, if the scheduler refuses it)."""

    element: Element
    final: FinalState
    resources: Optional[dict[str, Any]]
    log_tail: str
    grown: dict[str, Any] = field(default_factory=dict)  # what its resources grew by, for the log
