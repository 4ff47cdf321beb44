"""The engine for scheduler backends: a monitor on its own event loop, fed by ``submit`` from any thread.

Start-up happens in the constructor, before any submission, so a bad interpreter, host, bucket or scheduler
fails there with :class:`~clustrix_futures.errors.ConfigError`: the run directory is made, the interpreter is
probed (its Python major.minor must equal ours, since cloudpickle needs that; with S3 storage it must import
boto3), the worker's code is staged into the run directory if that interpreter cannot import it, and the
scheduler's array limit is read. Kubernetes has no interpreter to probe before a pod runs: the image must
hold the same Python major.minor, cloudpickle, boto3 and clustrix-futures.

Three parts, chosen from the options: the transport (this machine, or ``host`` over SSH), the storage of
payloads and results (the transport's filesystem, or S3 with ``storage``; :mod:`clustrix_futures.remote.storage`),
and the scheduler (:mod:`clustrix_futures.schedulers`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import posixpath
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

from clustrix_futures import __version__, config
from clustrix_futures.engine.monitor import Environment, Monitor
from clustrix_futures.engine.staging import stage
from clustrix_futures.errors import ConfigError, JobFailedError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.mapping.sizing import FunctionRates, scheduler_sizes
from clustrix_futures.remote.files import RemoteFiles
from clustrix_futures.remote.storage import S3Storage, Storage
from clustrix_futures.remote.transport import LocalTransport, Transport
from clustrix_futures.runfiles.layout import ENDPOINT_VARIABLE, SUBDIRECTORIES, RunDir, is_s3, new_run_name
from clustrix_futures.runfiles.records import encode_json, read_batches, read_manifest
from clustrix_futures.schedulers import capabilities, make_scheduler
from clustrix_futures.schedulers.base import BackendContext, Scheduler

log = logging.getLogger(__name__)
T = TypeVar("T")

# One line (any login shell passes it on): Python major.minor; whether cloudpickle, boto3 and clustrix_futures
# import; the version of the latter.
_PROBE = ("import sys, importlib.util as u; print('%d.%d' % sys.version_info[:2]); "
          "print(bool(u.find_spec('cloudpickle')), bool(u.find_spec('boto3'))); "
          "print(__import__('clustrix_futures').__version__ if u.find_spec('clustrix_futures') else '-')")
STARTUP_TIMEOUT = 120.0


@dataclass(frozen=True)
class Interpreter:
    """What :func:`probe_interpreter` found: ``version`` is None when the interpreter could not be run."""

    python: str
    version: Optional[str]
    cloudpickle: bool = False
    boto3: bool = False
    package_version: Optional[str] = None  # clustrix-futures there, if it has it
    failure: str = ""

    @property
    def needs_staging(self) -> bool:
        """Whether the worker's code (ours, and cloudpickle) must be copied into the run directory: the
        interpreter lacks it, or has another version of clustrix-futures, whose worker may not read our files."""
        return not self.cloudpickle or self.package_version != __version__


async def probe_interpreter(transport: Transport, python: str) -> Interpreter:
    """Run :data:`_PROBE`. Only its first line (the version) is required: a probe that fails after it (a broken
    clustrix-futures there, say) still tells the version, and what it did not tell counts as missing."""
    probe = await transport.run([python, "-c", _PROBE])
    lines = [line.strip() for line in probe.stdout.split("\n")] + ["", ""]
    if not re.fullmatch(r"\d+\.\d+", lines[0]):
        said = (probe.stderr.strip() or probe.stdout.strip()).replace("\n", " ")
        return Interpreter(python, None, failure=f"exit status {probe.returncode}" + (f": {said}" if said else ""))
    found = lines[1].split()
    return Interpreter(python, lines[0], found[:1] == ["True"], found[1:2] == ["True"],
                       lines[2] if lines[2] not in ("", "-") else None)


def interpreter_problem(found: Interpreter, where: str, s3: bool) -> Optional[tuple[str, str]]:
    """Why the workers cannot use this interpreter, and the fix; None if they can."""
    local = "{}.{}".format(*sys.version_info[:2])
    if found.version is None:
        return (f"the interpreter {found.python!r} cannot be run on {where}: {found.failure}",
                f"set the option 'python' to the absolute path of a Python {local} interpreter there")
    if found.version != local:
        return (f"{found.python!r} on {where} is Python {found.version}, but this client runs Python {local}; "
                f"cloudpickle needs the same version on both sides",
                f"set the option 'python' to a Python {local} interpreter there (e.g. python='/path/to/python{local}')")
    if s3 and not found.boto3:
        return (f"{found.python!r} on {where} cannot import boto3, which the workers of a run with S3 storage need",
                "install it there (pip install boto3)")
    return None


def make_transport(settings: config.Settings) -> Transport:
    if settings["host"] is None:
        return LocalTransport()
    from clustrix_futures.remote.ssh import SSHTransport

    return SSHTransport(settings)


def make_storage(location: Optional[str], settings: config.Settings, transport: Transport) -> Storage:
    """S3 for an ``s3://`` location; otherwise the transport's own filesystem."""
    return S3Storage(settings["endpoint_url"]) if is_s3(location) else transport


class ClusterEngine:
    """Runs payloads as array jobs of a scheduler backend."""

    ships_code = True  # the compute nodes may lack the user's own modules: pickle those by value

    def __init__(self, settings: config.Settings, initializer: Optional[bytes],
                 attach_to: Optional[str] = None) -> None:
        """Start a new run, or with ``attach_to`` take over an existing run directory (see ``futures``)."""
        if initializer is not None:
            raise ConfigError("initializer is supported only by the local backend; on a cluster, run "
                              "set-up code at the start of the task or with the 'setup' option")
        self.settings = settings
        self.scheduler: Scheduler
        self.storage: Storage
        self._ids = itertools.count()
        self._outstanding: set[ClusterFuture] = set()
        self._submitted = self._unsuccessful = 0
        self._rates = FunctionRates()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="clustrix-futures-monitor",
                                        daemon=True)
        self._thread.start()
        self._finished = threading.Event()
        try:
            self.transport = self._call(self._connect(), settings["connect_timeout"] + STARTUP_TIMEOUT)
            environment, adopted = self._call(self._start(attach_to), STARTUP_TIMEOUT)
        except BaseException:
            if hasattr(self, "transport"):  # started but refused (e.g. a wrong Python): close the connection
                self._call(self._close_connections(), STARTUP_TIMEOUT)
            self._stop_loop()
            raise
        self.run_dir = environment.run_dir
        self.monitor = Monitor(settings, self.scheduler, self.storage, environment)
        self.futures: list[ClusterFuture] = self._call(self._adopt(adopted), STARTUP_TIMEOUT)
        self._call(self._spawn_monitor(), STARTUP_TIMEOUT)

    # ------------------------------------------------------------ the executor's side

    def submit(self, payload: bytes, resources: Optional[Mapping[str, Any]] = None,
               packable: bool = True) -> ClusterFuture:
        task_id = next(self._ids)
        future = ClusterFuture(task_id, on_cancel=self._on_cancel)
        with self._lock:
            self._outstanding.add(future)
            self._submitted += 1
        future.add_done_callback(self._on_done)
        self.monitor.inbox.append((task_id, future, payload, resources, packable))
        self._loop.call_soon_threadsafe(self.monitor.wake)
        return future

    def chunk_sizes(self, total: Optional[int], fn: Callable[..., Any]) -> Iterator[int]:
        """Map chunks sized so each array element runs about ``element_seconds``, learned per function."""
        return scheduler_sizes(total, self._rates.of(fn), self.settings["element_seconds"], self.settings.max_workers)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self._finished.is_set():
            return
        with self._lock:
            futures = list(self._outstanding)
        if cancel_futures:
            self._call(self.monitor.cancel_queued(futures), STARTUP_TIMEOUT)
        self._loop.call_soon_threadsafe(self._begin_stopping)
        if wait:
            concurrent.futures.wait(futures)
            self._finished.wait()

    def files(self) -> RemoteFiles:
        """Filesystem helpers running on the cluster through this engine's transport."""
        return RemoteFiles(lambda argv: self._call(self.transport.run(argv), STARTUP_TIMEOUT), self.monitor.env.python)

    @property
    def command_counts(self) -> dict[str, int]:
        return dict(self.scheduler.commands)

    # ------------------------------------------------------------ on the loop

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _connect(self) -> Transport:
        transport = make_transport(self.settings)
        connect = getattr(transport, "connect", None)
        if connect is not None:
            await connect()
        return transport

    async def _start(self, attach_to: Optional[str]) -> tuple[Environment, list[dict[str, Any]]]:
        transport, settings = self.transport, self.settings
        self.storage = make_storage(attach_to or settings["storage"], settings, transport)
        manifest = await self._read_manifest(attach_to) if attach_to else {}
        s3, api = isinstance(self.storage, S3Storage), capabilities(settings.backend).api
        if capabilities(settings.backend).needs_s3 and not s3:
            raise ConfigError(f"the {settings.backend} backend needs S3 storage (its pods do not see this machine's "
                              f"files): set the option 'storage' to 's3://BUCKET/PREFIX'")
        if api:
            python, staged = settings["python"] or manifest.get("python") or "python3", False
        else:
            python, staged = await self._probe(settings["python"] or manifest.get("python") or (
                sys.executable if settings["host"] is None else "python3"), s3)
        if attach_to:
            run_dir = RunDir(attach_to, manifest.get("host_dir"))
        else:
            run_dir = await self._make_run_dir(new_run_name(), s3, api)
        self.scheduler = make_scheduler(settings, BackendContext.of(settings, python, run_dir.host), transport,
                                        run_dir.log)
        if staged:
            await self._stage_code(run_dir, python)
        max_array = await self.scheduler.max_array_size()
        if not attach_to:
            await self.storage.write(run_dir.manifest, encode_json({
                "backend": settings.backend, "options": settings.options, "max_workers": settings.max_workers,
                "python": python, "staged": staged, "host_dir": run_dir.host_root, "client": socket.gethostname(),
                "pid": os.getpid(), "created": time.time()}))
        log.info("run directory %s on %s", run_dir.root, self._where())
        adopted = await read_batches(self.storage, run_dir) if attach_to else []
        script_env = {ENDPOINT_VARIABLE: settings["endpoint_url"]} if s3 and settings["endpoint_url"] else {}
        return Environment(run_dir, python, staged, max_array, script_env), adopted

    async def _probe(self, python: str, s3: bool) -> tuple[str, bool]:
        """Check the interpreter; whether the worker's code must be staged for it."""
        found = await probe_interpreter(self.transport, python)
        problem = interpreter_problem(found, self._where(), s3)
        if problem is not None:
            raise ConfigError("; ".join(problem))
        return python, found.needs_staging

    async def _make_run_dir(self, name: str, s3: bool, api: bool) -> RunDir:
        """A new run's directories: in the storage, and (for S3 runs of command schedulers) its scripts and logs
        under work_dir on the transport's filesystem."""
        host = None
        if not api:
            work_dir = self.settings["work_dir"]
            if work_dir.startswith("~"):
                work_dir = (await self.transport.home()) + work_dir[1:]
            host = posixpath.join(work_dir, name)
        if not s3:
            assert host is not None
            for sub in ("", *SUBDIRECTORIES):
                await self.transport.makedirs(posixpath.join(host, sub) if sub else host)
            return RunDir(host)
        root = posixpath.join(self.settings["storage"], name)
        assert isinstance(self.storage, S3Storage)
        try:
            await self.storage.check(root)
        except Exception as exc:
            raise ConfigError(f"cannot use the S3 storage {self.settings['storage']}: {exc}; check the bucket, "
                              f"the credentials (boto3's chain) and 'endpoint_url'") from exc
        if host is not None:
            for sub in ("", "batches", "logs"):
                await self.transport.makedirs(posixpath.join(host, sub) if sub else host)
        return RunDir(root, host)

    async def _read_manifest(self, root: str) -> dict[str, Any]:
        """Take the backend and options of the run being attached to; options given now override them."""
        manifest = await read_manifest(self.storage, root, self._where())
        config.adopt_manifest(self.settings, manifest)
        return manifest

    async def _adopt(self, documents: list[dict[str, Any]]) -> list[ClusterFuture]:
        futures = self.monitor.adopt(documents, lambda task_id: ClusterFuture(task_id, on_cancel=self._on_cancel))
        with self._lock:
            self._ids = itertools.count(max((f.task_id for f in futures), default=-1) + 1)
            self._outstanding.update(futures)
            self._submitted += len(futures)
        for future in futures:
            future.add_done_callback(self._on_done)
        return futures

    async def _stage_code(self, run_dir: RunDir, python: str) -> None:
        """Copy what the worker imports (:data:`~clustrix_futures.engine.staging.NODE_CLOSURE` and cloudpickle)."""
        await stage(self.transport, run_dir.code, python)

    async def _spawn_monitor(self) -> asyncio.Task[None]:
        return asyncio.ensure_future(self._run_monitor())

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
                await self._cleanup()
            except Exception:
                log.exception("clean-up of %s failed", self.run_dir.root)
            self._finished.set()
            self._loop.call_soon(self._loop.stop)

    async def _cleanup(self) -> None:
        keep = bool(self.settings["keep_files"] or self._unsuccessful or self._outstanding)
        if keep:
            log.info("keeping run directory %s (%d of %d tasks did not succeed)", self.run_dir.root,
                     self._unsuccessful + len(self._outstanding), self._submitted)
        else:
            await self.storage.remove_tree(self.run_dir.root)
            if self.run_dir.host_root:
                await self.transport.remove_tree(self.run_dir.host_root)
        await self.scheduler.close(remove=not keep)
        await self._close_connections()

    async def _close_connections(self) -> None:
        storage = getattr(self, "storage", None)
        if isinstance(storage, S3Storage):
            await storage.close()
        await self.transport.close()

    def _begin_stopping(self) -> None:
        self.monitor.stopping = True
        self.monitor.wake()

    def _on_done(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._outstanding.discard(future)
            if future.cancelled() or future.exception() is not None:
                self._unsuccessful += 1

    def _on_cancel(self, future: ClusterFuture) -> None:
        self.monitor.cancelled.append(future.task_id)
        self._loop.call_soon_threadsafe(self.monitor.wake)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _where(self) -> str:
        return self.settings["host"] or "this machine"
