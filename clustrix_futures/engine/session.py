"""The engine for scheduler backends: :class:`ClusterEngine`, one run on a cluster, fed from any thread.

The engine's I/O runs on its own event loop (:mod:`clustrix_futures.engine.bridge`). The constructor connects
to the cluster (:class:`~clustrix_futures.remote.site.Site`) and starts the run
(:mod:`clustrix_futures.engine.startup`), so a bad interpreter, host, bucket or scheduler fails there with
:class:`~clustrix_futures.errors.ConfigError`; then the job monitor (:mod:`clustrix_futures.engine.monitor`)
runs on the loop until shutdown, and the run directory is removed after it unless something did not succeed.

Three parts, chosen from the options: the transport (this machine, or ``host`` over SSH), the storage of
payloads and results (the transport's filesystem, or S3 with ``storage``; :mod:`clustrix_futures.remote.storage`),
and the scheduler (:mod:`clustrix_futures.schedulers`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

from clustrix_futures import config
from clustrix_futures.engine.bridge import LoopThread
from clustrix_futures.engine.forwarding import Forwarder
from clustrix_futures.engine.initializer import RunInitializer
from clustrix_futures.engine.interruption import SecondInterrupt, interrupted_message
from clustrix_futures.engine.monitor import Monitor
from clustrix_futures.engine.output import task_output
from clustrix_futures.engine.sitecache import SiteCache
from clustrix_futures.engine.startup import Started, Startup
from clustrix_futures.engine.submission import JobScript
from clustrix_futures.errors import JobFailedError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.mapping.sizing import FunctionRates, scheduler_sizes
from clustrix_futures.remote.files import RemoteFiles
from clustrix_futures.remote.site import Site
from clustrix_futures.remote.storage import Storage
from clustrix_futures.remote.transport import Transport
from clustrix_futures.runfiles.layout import RunDir
from clustrix_futures.schedulers import check_checkpoints, check_resources
from clustrix_futures.schedulers.base import QUEUED, Scheduler

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 120.0
KEEPS_SITE_CACHE = ("CANCELLED", "INTERRUPTED")  # failures that say nothing of the site


class ClusterEngine:
    """Runs payloads as array jobs of a scheduler backend (the executor's ``Engine`` for every backend but
    ``local``).

    ``submit``, ``chunk_sizes``, ``shutdown`` and ``files`` may be called from any thread; the counts of
    outstanding and unsuccessful futures are guarded by a lock, and work reaches the monitor only through its
    thread-safe methods. ``futures`` holds an attached run's futures (``attach_to``), in submission order.
    """

    ships_code = True  # the compute nodes may lack the user's own modules: pickle those by value

    def __init__(self, settings: config.Settings, initializer: Optional[bytes],
                 attach_to: Optional[str] = None) -> None:
        """Start a new run, or with ``attach_to`` take over an existing run directory (see ``futures``)."""
        check_resources(settings.backend, settings.options)
        check_checkpoints(settings)
        self.settings = settings
        self._ids = itertools.count()
        self._outstanding: set[ClusterFuture] = set()
        self._submitted = self._unsuccessful = 0
        self._rates = FunctionRates()
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._bridge = LoopThread("clustrix-futures-monitor")
        self._forwarding: Optional[asyncio.Future[None]] = None  # the output forwarder (forward_output)
        self._forwarding_done = asyncio.Event()
        self._initializer = RunInitializer(initializer)
        self._site_cache: Optional[SiteCache] = None
        self._interrupted = False  # a first Ctrl-C was handled (interrupt)
        started = self._start(attach_to)
        self.transport: Transport = self.site.transport
        self.storage: Storage = started.storage
        self.scheduler: Scheduler = started.scheduler
        self.run_dir: RunDir = started.env.run_dir
        self.monitor = Monitor(settings, self.scheduler, self.storage, started.env)
        self.futures: list[ClusterFuture] = self._bridge.call(self._adopt(started.adopted), STARTUP_TIMEOUT)
        self._bridge.call(self._spawn_monitor(), STARTUP_TIMEOUT)

    def _start(self, attach_to: Optional[str]) -> Started:
        """Connect and start the run; on failure, close what was opened and stop the loop."""
        site: Optional[Site] = None
        startup: Optional[Startup] = None
        try:
            site = self._bridge.call(self._connect(), self.settings["connect_timeout"] + STARTUP_TIMEOUT)
            startup = Startup(site, self.settings)
            started = self._bridge.call(startup.start(attach_to), STARTUP_TIMEOUT)
            self._bridge.call(self._initializer.stage(started.storage, started.env.run_dir), STARTUP_TIMEOUT)
        except BaseException:
            if startup is not None and startup.cache is not None:  # what was cached may be why it failed
                startup.cache.forget()
            if site is not None:  # connected but refused (e.g. a wrong Python): close the connection
                self._bridge.call(site.close(), STARTUP_TIMEOUT)
            self._bridge.stop()
            raise
        self.site = site
        self._site_cache = started.site_cache
        return started

    # ------------------------------------------------------------ the executor's side

    def submit(self, payload: bytes, resources: Optional[Mapping[str, Any]] = None,
               packable: bool = True) -> ClusterFuture:
        self._initializer.check()
        future = self._new_future(next(self._ids))
        future.add_done_callback(self._initializer.on_done)
        if not packable:
            future._stream()  # a map chunk: its items may come in parts while it runs
        with self._lock:
            self._outstanding.add(future)
            self._submitted += 1
        future.add_done_callback(self._on_done)
        self.monitor.submit(future.task_id, future, payload, resources, packable)
        return future

    def _new_future(self, task_id: int) -> ClusterFuture[Any]:
        """A task's future: cancellable through the monitor, queued until it learns of its element, and
        reading its output through this engine (except on Kubernetes, whose logs are the pods')."""
        future: ClusterFuture[Any] = ClusterFuture(task_id, on_cancel=self._on_cancel)
        future._phase = QUEUED
        if self.scheduler.name != "kubernetes":
            future._read_output = functools.partial(self._read_output, future)
        return future

    def _read_output(self, future: ClusterFuture[Any], stream: str, limit: int) -> str:
        if self._finished.is_set():
            raise RuntimeError("the executor has shut down: a task's output can no longer be read through it "
                               f"(the logs are in {self.run_dir.host}/logs when the run directory is kept)")
        return self._bridge.call(task_output(self.storage, self.transport, self.run_dir, future, stream, limit),
                                 STARTUP_TIMEOUT)

    def chunk_sizes(self, total: Optional[int], fn: Callable[..., Any]) -> Iterator[int]:
        """Map chunks sized so each array element runs about ``element_seconds``, learned per function."""
        return scheduler_sizes(total, self._rates.of(fn), self.settings["element_seconds"], self.settings.max_workers)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self._finished.is_set():
            return
        with self._lock:
            futures = list(self._outstanding)
        if cancel_futures:
            self._bridge.call(self.monitor.cancel_queued(futures), STARTUP_TIMEOUT)
        self.monitor.stop()
        if wait:
            concurrent.futures.wait(futures)
            self._finished.wait()

    def interrupt(self) -> None:
        """The first Ctrl-C (:mod:`~clustrix_futures.engine.interruption`): cancel the queued elements (as of a
        fresh status query), stop waiting (the monitor ends once the running elements have), say on stderr
        where the run is and how to cancel, follow or take it over; a second Ctrl-C cancels the running
        elements too. Called by the executor, in the thread the interrupt reached."""
        if self._interrupted:
            return
        self._interrupted = True
        second = SecondInterrupt(self._cancel_running_now)
        try:
            with self._lock:
                futures = list(self._outstanding)
            cancelled, running = self._bridge.call(self._withdraw_queued(futures), STARTUP_TIMEOUT)
            self.monitor.stop()
            sys.stderr.write(interrupted_message(self.run_dir.root, cancelled, running, self.settings.options))
            sys.stderr.flush()
        finally:
            second.handled()

    async def _withdraw_queued(self, futures: list[ClusterFuture]) -> tuple[int, int]:
        """Cancel what has not started; how many elements were withdrawn, and how many still run."""
        before = len(self.monitor.books.live)
        await self.monitor.cancel_queued(futures)
        running = len(self.monitor.books.live)
        return max(0, before - running), running

    def _cancel_running_now(self) -> None:
        """The second Ctrl-C: cancel every element still live (nothing if the monitor has ended)."""
        if not self._finished.is_set():
            with contextlib.suppress(Exception):
                self._bridge.call(self._cancel_running(), STARTUP_TIMEOUT)

    async def _cancel_running(self) -> None:
        """Skip markers for the unfinished tasks of every live element (should one run again), then cancel
        those elements at the scheduler; the monitor fails their futures with the scheduler's CANCELLED."""
        books = self.monitor.books
        live = list(books.live.values())
        for element in live:
            for task_id in element.task_ids:
                task = books.tasks.get(task_id)
                if task is not None and not task.future.done():
                    await self.storage.write(self.run_dir.skip(task_id), b"")
        if live:
            await self.scheduler.cancel(sorted(element.key for element in live))

    def job_script(self, resources: Optional[Mapping[str, Any]]) -> JobScript:
        """The command and script the next array would be submitted with; nothing is submitted or run."""
        return self.monitor.job_script(resources)

    def files(self) -> RemoteFiles:
        """Filesystem helpers running on the cluster through this engine's transport."""
        return RemoteFiles(lambda argv: self._bridge.call(self.transport.run(argv), STARTUP_TIMEOUT),
                           self.monitor.env.python)

    @property
    def command_counts(self) -> dict[str, int]:
        return dict(self.scheduler.commands)

    def _on_done(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._outstanding.discard(future)
            if future.cancelled() or future.exception() is not None:
                self._unsuccessful += 1
        if not future.cancelled():
            self._forget_site_on(future.exception())

    def _forget_site_on(self, error: Optional[BaseException]) -> None:
        """The machinery failed a task (an element ended without its result, a submission was refused...):
        what the site cache holds may be why (another interpreter there now, another array limit), so the
        next executor asks the site again. A task's own exception, or a cancellation, says nothing of it."""
        if (isinstance(error, JobFailedError) and error.state not in KEEPS_SITE_CACHE
                and self._site_cache is not None):
            self._site_cache.forget()

    def _on_cancel(self, future: ClusterFuture) -> None:
        self.monitor.cancel(future.task_id)

    # ------------------------------------------------------------ on the loop

    async def _connect(self) -> Site:
        site = Site(self.settings)
        await site.connect()
        return site

    async def _adopt(self, documents: list[dict[str, Any]]) -> list[ClusterFuture]:
        futures = self.monitor.adopt(documents, self._new_future)
        with self._lock:
            self._ids = itertools.count(max((f.task_id for f in futures), default=-1) + 1)
            self._outstanding.update(futures)
            self._submitted += len(futures)
        for future in futures:
            future.add_done_callback(self._on_done)
        return futures

    async def _spawn_monitor(self) -> asyncio.Task[None]:
        if self.settings["forward_output"] and self.scheduler.name != "kubernetes":
            self._forwarding = asyncio.ensure_future(Forwarder(
                self.transport, self.storage, self.run_dir, self.monitor.books).run(self._forwarding_done))
        return asyncio.ensure_future(self._run_monitor())

    async def _stop_forwarding(self) -> None:
        """The monitor is done: the forwarder's last pass, before the logs may be removed."""
        self._forwarding_done.set()
        if self._forwarding is not None:
            await asyncio.gather(self._forwarding, return_exceptions=True)

    async def _run_monitor(self) -> None:
        """Run the monitor; whatever happens to it, no future is left waiting and the loop ends."""
        try:
            await self.monitor.run()
        except BaseException as exc:
            log.exception("the job monitor stopped")
            self.monitor.fail_everything(JobFailedError(
                f"the job monitor stopped: {exc!r}. The jobs keep running; their run directory is "
                f"{self.run_dir.root}", state="MONITOR_FAILED"))
            raise
        finally:
            try:
                await self._stop_forwarding()
                await self._cleanup()
            except Exception:
                log.exception("clean-up of %s failed", self.run_dir.root)
            self._finished.set()
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.stop)

    async def _cleanup(self) -> None:
        keep = bool(self.settings["keep_files"] or self._unsuccessful or self._outstanding)
        if keep:
            log.info("keeping run directory %s (%d of %d tasks did not succeed)", self.run_dir.root,
                     self._unsuccessful + len(self._outstanding), self._submitted)
        else:
            await _remove_tree(self.storage, self.run_dir.root)
            if self.run_dir.host_root:
                await _remove_tree(self.transport, self.run_dir.host_root)
        await self.scheduler.close(remove=not keep)
        await self.site.close()


async def _remove_tree(where: Storage | Transport, path: str, attempts: int = 5) -> None:
    """Remove a run's tree; once more, a moment later, when a file appeared in it meanwhile. The ssh backend's
    supervisor records an element's end just after the element wrote its result, so the run may be over for
    the client while that last write still lands ("Directory not empty")."""
    for attempt in range(attempts):
        try:
            await where.remove_tree(path)
            return
        except OSError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
