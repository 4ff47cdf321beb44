"""Run directories after the fact: what ``clustrix-futures status``, ``logs``, ``cancel`` and ``clean`` do.

A run directory (:mod:`clustrix_futures.runfiles.layout`) can be understood without the client that made it: the
manifest names the backend, options and interpreter; ``batches/B.json`` the job id and task ids of each array
element (``B-I.rerun.json`` an element run again); ``results/`` the outcomes, including the journals of
elements still running; ``skip/`` the cancelled tasks. :class:`OpenRun` reads them together with ONE status
query to the scheduler. Unlike ``ClusterPoolExecutor.attach`` it takes nothing over: no monitor runs, and
nothing is resubmitted.

What a run directory cannot tell: tasks the client still held when it died (not yet in any batch file).

Only our own runs are opened (:mod:`clustrix_futures.remote.ownership`): a run directory someone else owns, or
others can write to, is listed as skipped with the reason, and nothing in it is read. Even in our own runs these
commands never unpickle an outcome and never run the interpreter a manifest names: states and times come from
the result journals' frame headers, a raised task's traceback from the text inside its pickle (read as data by
:mod:`pickletools`, not unpickled), and the host backend's commands run the user's own ``python``. ``clean``
removes only ``WORK_DIR/NAME`` (and an S3 run's prefix), never a path a manifest names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import pickletools
import posixpath
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from clustrix_futures import config
from clustrix_futures.errors import ConfigError
from clustrix_futures.remote.ownership import host_dir_of, run_refusal
from clustrix_futures.remote.site import Site
from clustrix_futures.remote.storage import Storage
from clustrix_futures.remote.transport import Transport
from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.layout import PARTIAL_SUFFIX, RESULT_SUFFIX, RunDir, is_s3
from clustrix_futures.runfiles.records import read_batches, read_manifest
from clustrix_futures.schedulers import capabilities, make_scheduler
from clustrix_futures.schedulers.base import QUEUED, RUNNING, BackendContext, ElementKey, FinalState, Scheduler

# A task's state, as `status` reports it.
SUCCEEDED, RAISED, CANCELLED, FAILED = "succeeded", "raised", "cancelled", "failed"
UNREADABLE, UNKNOWN = "unreadable", "unknown"  # a damaged result journal; a scheduler not answering
STATES = (SUCCEEDED, RAISED, RUNNING, QUEUED, CANCELLED, FAILED, UNREADABLE, UNKNOWN)
PARALLEL_RUNS = 8  # runs read at once by RunSite.snapshots (an SSH connection serves 8 commands at once)
LOG_LIMIT = 1 << 20  # bytes of each log `logs` shows (the end of it)


@dataclass
class TaskState:
    task_id: int
    batch: int
    index: int
    job_id: str
    state: str
    detail: str = ""
    traceback: str = ""

    @property
    def element(self) -> str:
        return f"{self.job_id}_{self.index}"


@dataclass
class Snapshot:
    """Every task of a run, and whether any of its elements is still queued or running."""

    run: OpenRun
    tasks: list[TaskState] = field(default_factory=list)
    live: dict[ElementKey, str] = field(default_factory=dict)  # element -> queued | running

    def counts(self) -> dict[str, int]:
        found = Counter(task.state for task in self.tasks)
        return {state: found[state] for state in STATES if found[state]}

    def task(self, task_id: int) -> TaskState:
        for task in self.tasks:
            if task.task_id == task_id:
                return task
        known = f"tasks 0-{max(t.task_id for t in self.tasks)}" if self.tasks else "no tasks"
        raise ConfigError(f"{self.run.root} has no task {task_id} ({known})")

    def as_json(self) -> dict[str, Any]:
        return {"run_dir": self.run.root, "backend": self.run.backend, "created": self.run.manifest.get("created"),
                "counts": self.counts(), "live_elements": len(self.live),
                "tasks": [{"task": t.task_id, "element": t.element, "state": t.state, "detail": t.detail}
                          for t in self.tasks]}


class ForeignRun(ConfigError):
    """A run directory that is not ours (see :mod:`clustrix_futures.remote.ownership`): never opened."""


class OpenRun:
    """An existing run directory of ours, opened through its transport and storage; see the module docstring.
    ``python`` is the user's interpreter (never the manifest's); ``work_dir`` the user's, where its host
    directory is."""

    def __init__(self, root: str, settings: config.Settings, transport: Transport, storage: Storage,
                 manifest: dict[str, Any], python: str, work_dir: str) -> None:
        self.root = root
        self.settings = settings
        self.transport = transport
        self.storage = storage
        self.manifest = manifest
        self.work_dir = work_dir
        self.backend: str = manifest["backend"]
        self.run_dir = RunDir(root, host_dir_of(root, work_dir) if is_s3(root) and manifest.get("host_dir") else None)
        self.damaged: dict[str, str] = {}  # "B-I" -> why its result journal cannot be read
        self.items_done: dict[int, int] = {}  # a running map chunk's items reported so far, by task
        context = BackendContext.of(settings, python, self.run_dir.host)
        self.scheduler: Scheduler = make_scheduler(settings, context, transport, self.run_dir.log)

    def client_alive(self) -> bool:
        """Whether the client that made the run still runs (known only when it ran on this machine)."""
        if self.manifest.get("client") != socket.gethostname() or not self.manifest.get("pid"):
            return False
        try:
            os.kill(int(self.manifest["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def snapshot(self) -> Snapshot:
        """Every task's state: the scheduler is asked first, then the results are read, so an element that
        ends between the two shows its results rather than looking lost."""
        elements = {(d["batch"], index): (d["job_ids"][index], list(task_ids))
                    for d in await read_batches(self.storage, self.run_dir)
                    for index, task_ids in enumerate(d["elements"])}
        report = await self.scheduler.status(sorted({job for job, _ in elements.values()})) if elements else None
        phases = report.phases if report else {}
        outcomes = await self._outcomes()
        skipped = {int(n) for n in await self.storage.listdir(self.run_dir.path("skip")) if n.isdigit()}
        snapshot = Snapshot(self)
        ended: list[tuple[str, int, list[TaskState]]] = []
        for (batch, index), (job_id, task_ids) in sorted(elements.items()):
            phase = phases.get((job_id, index))
            if phase in (QUEUED, RUNNING):
                snapshot.live[(job_id, index)] = phase
            waiting = []
            for task_id in task_ids:
                task = TaskState(task_id, batch, index, job_id, phase or FAILED)
                if task_id in outcomes:
                    task.state, task.detail, task.traceback = outcomes[task_id]
                elif task_id in skipped:
                    task.state = CANCELLED
                elif f"{batch}-{index}" in self.damaged:
                    task.state, task.detail = UNREADABLE, self.damaged[f"{batch}-{index}"]
                elif phase not in (QUEUED, RUNNING):
                    waiting.append(task)
                elif task_id in self.items_done:
                    task.detail = f"{self.items_done[task_id]} map items done so far"
                snapshot.tasks.append(task)
            if waiting:
                ended.append((job_id, index, waiting))
        await self._explain_failures(ended, report is None)
        snapshot.tasks.sort(key=lambda t: t.task_id)
        return snapshot

    async def _outcomes(self) -> dict[int, tuple[str, str, str]]:
        """Each finished task's (state, detail, traceback), from the frame headers of complete and partial
        result journals; nothing is unpickled."""
        names = [n for n in await self.storage.listdir(self.run_dir.results)
                 if n.endswith((RESULT_SUFFIX, PARTIAL_SUFFIX))]
        names.sort(key=lambda n: n.endswith(RESULT_SUFFIX))  # a complete journal wins over a stale partial one
        contents = await self.storage.read_many([self.run_dir.path("results", n) for n in names])
        outcomes: dict[int, tuple[str, str, str]] = {}
        for path, data in contents.items():
            try:
                for frame in journal.read_frames(data or b""):
                    part = journal.read_part(data or b"", frame)
                    if part is not None:  # a running chunk's items so far: counted from the part's head
                        self.items_done[frame.task_id] = part[0] + part[1]
                    elif frame.kind == journal.OK:
                        outcomes[frame.task_id] = (SUCCEEDED, "", "")
                    elif frame.kind == journal.RAISED:
                        text = traceback_text(data[frame.offset:frame.offset + frame.size] if data else b"")
                        outcomes[frame.task_id] = (RAISED, _last_line(text), text)
            except ValueError as exc:  # another journal version: its element's tasks say so
                self.damaged[posixpath.basename(path).rsplit(".", 1)[0]] = f"{path}: {exc}"
        return outcomes

    async def _explain_failures(self, ended: list[tuple[str, int, list[TaskState]]], unreachable: bool) -> None:
        """Tasks of elements no longer queued or running, without a result: the scheduler's final word."""
        if unreachable:
            for _, _, tasks in ended:
                for task in tasks:
                    task.state, task.detail = UNKNOWN, "the scheduler could not be reached"
            return
        finals: dict[ElementKey, FinalState] = {}
        for job_id in sorted({job for job, _, _ in ended}):
            finals.update(await self.scheduler.final(job_id) or {})
        for job_id, index, tasks in ended:
            final = finals.get((job_id, index))
            detail = (f"{final.state}" + (f" ({final.detail})" if final.detail else "") if final else
                      "its element left the queue without this task's result")
            for task in tasks:
                task.detail = detail

    async def logs(self, task: TaskState) -> dict[str, bytes]:
        """The end of the stdout and stderr of the element that ran ``task`` (shared by the tasks packed into
        it). API schedulers (Kubernetes) keep one log per pod, shown as stderr."""
        if capabilities(self.backend).api:
            return {"err": await self.scheduler.log_tail((task.job_id, task.index), task.batch, LOG_LIMIT)}
        paths = self.log_paths(task)
        return {stream: await self.transport.read_span(path, 0, None, LOG_LIMIT) or b""
                for stream, path in paths.items()}

    def log_paths(self, task: TaskState) -> dict[str, str]:
        return {stream: self.run_dir.log(task.batch, str(task.index), stream) for stream in ("out", "err")}

    async def cancel(self) -> tuple[Snapshot, int, int]:
        """Stop the run: every unfinished task gets its skip marker (so an element that starts anyway, or runs
        again, skips it), then every queued or running element that holds one is cancelled at the scheduler
        (an element whose tasks all finished is left to end by itself). A client still watching the run sees
        its futures fail with the scheduler's CANCELLED. Returns the snapshot taken before, and how many tasks
        and elements were cancelled."""
        snapshot = await self.snapshot()
        unfinished = [t for t in snapshot.tasks if t.state in (QUEUED, RUNNING)]
        for task in unfinished:
            await self.storage.write(self.run_dir.skip(task.task_id), b"")
        elements = sorted({(t.job_id, t.index) for t in unfinished} & set(snapshot.live))
        if elements:
            await self.scheduler.cancel(elements)
        return snapshot, len(unfinished), len(elements)

    async def remove(self) -> None:
        """Remove the run: its root (a path the user named or found in work_dir, or an S3 prefix) and
        ``WORK_DIR/NAME``, checked to be ours again just before; OSError (or ForeignRun) if that fails."""
        refusal = await run_refusal(self.transport, self.root, self.work_dir)
        if refusal:
            raise ForeignRun(refusal)
        await self.storage.remove_tree(self.root)
        if self.run_dir.host_root:
            await self.transport.remove_tree(self.run_dir.host_root)


def traceback_text(body: bytes) -> str:
    """The traceback text of a raised task's encoded outcome ``(False, exception, text, seconds)``, read as data:
    the last string the pickle pushes (:func:`pickletools.genops` parses opcodes and runs none of them)."""
    text = ""
    try:
        for _, argument, _ in pickletools.genops(body):
            if isinstance(argument, str):
                text = argument
    except Exception:  # damaged: what was read so far
        pass
    return text


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "the task raised"


# ---------------------------------------------------------------- opening runs


class RunSite(Site):
    """A :class:`~clustrix_futures.remote.site.Site` that finds and opens the run directories on it."""

    async def open(self, root: str) -> OpenRun:
        """The run ``root`` if it is ours (ForeignRun if not): a directory is checked before anything in it is
        read; an S3 run's ``WORK_DIR/NAME`` (work_dir as given, else as its manifest recorded it) once its
        manifest is read (the bucket's prefix must be yours: docs/security.md)."""
        if not is_s3(root):
            await self._refuse_foreign(root, "")
        python = self.settings["python"] or (sys.executable if self.settings["host"] is None else "python3")
        storage = self.storage(root)
        hint = "" if self.settings["host"] else " (for a run on a remote cluster, name it with --profile or --host)"
        manifest = await read_manifest(storage, root, self.where(), hint)
        settings = dataclasses.replace(self.settings, options=dict(self.settings.options))
        config.adopt_manifest(settings, manifest, root)
        work_dir = await self.expand(settings["work_dir"])
        if is_s3(root):
            await self._refuse_foreign(root, work_dir)
        return OpenRun(root, settings, self.transport, storage, manifest, python, work_dir)

    async def _refuse_foreign(self, root: str, work_dir: str) -> None:
        refusal = await run_refusal(self.transport, root, work_dir)
        if refusal:
            raise ForeignRun(f"skipped {root}: {refusal}; nothing in it was read")

    async def snapshots(self, roots: list[str]) -> list[Snapshot | ConfigError]:
        """The snapshot of each run (several read at once), or why it could not be read."""
        gate = asyncio.Semaphore(PARALLEL_RUNS)

        async def one(root: str) -> Snapshot | ConfigError:
            async with gate:
                try:
                    return await (await self.open(root)).snapshot()
                except ConfigError as exc:
                    return exc
                except Exception as exc:  # a manifest that is not ours, storage that does not answer...
                    return ConfigError(f"{root} cannot be read: {type(exc).__name__}: {exc}")

        return list(await asyncio.gather(*(one(root) for root in roots)))

    async def runs(self) -> list[str]:
        """The run directories under ``work_dir`` and, with S3 storage, under ``storage``, oldest first (names
        start with their creation time). A run with S3 storage keeps its scripts and logs in ``work_dir`` (none,
        on Kubernetes) and the rest under ``storage``."""
        found: dict[str, str] = {}
        storage = self.settings["storage"]
        if is_s3(storage):
            listed = await self.storage(storage).listdir(storage)
            found.update((n, posixpath.join(storage, n)) for n in listed if _looks_like_run(n))
        work_dir = await self.work_dir()
        names = [n for n in await self.transport.listdir(work_dir) if _looks_like_run(n)]
        ours = [n for n in names if await run_refusal(self.transport, posixpath.join(work_dir, n), work_dir) is None]
        found.update((n, posixpath.join(work_dir, n)) for n in names if n not in ours)  # listed as skipped
        manifests = await self.transport.read_many([RunDir(posixpath.join(work_dir, n)).manifest for n in ours])
        found.update((posixpath.basename(posixpath.dirname(path)), posixpath.dirname(path))
                     for path, data in manifests.items() if data is not None)
        return [found[name] for name in sorted(found)]


def _looks_like_run(name: str) -> bool:
    parts = name.split("-")  # runfiles.layout.new_run_name: YYYYmmdd-HHMMSS-hex
    return len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and len(parts[0]) == 8


def age(manifest: dict[str, Any]) -> Optional[float]:
    created = manifest.get("created")
    return None if created is None else time.time() - float(created)


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "no tasks recorded"


def parse_age(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"12h"``, ``"7d"`` (a bare number means days) to seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "d")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"expected an age such as 90s, 30m, 12h or 7d, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"an age must be a finite number not below zero, not {text!r}")
    return value * units[unit]
