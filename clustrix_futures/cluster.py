"""The engine for scheduler backends: a monitor on its own event loop, fed by ``submit`` from any thread.

Start-up happens in the constructor, before any submission, so a bad interpreter, host or scheduler fails
there with :class:`~clustrix_futures.errors.ConfigError`: the run directory is made, the interpreter is
probed (its Python major.minor must equal ours, since cloudpickle needs that), the worker's code is staged
into the run directory if that interpreter cannot import it, and the scheduler's array limit is read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import os
import posixpath
import socket
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, Callable, Optional, TypeVar

import cloudpickle

from clustrix_futures import config
from clustrix_futures.backends import get_backend
from clustrix_futures.backends.base import Backend, BackendContext
from clustrix_futures.chunking import AdaptiveSizes, ItemRate
from clustrix_futures.errors import ConfigError, JobFailedError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.monitor import Environment, Monitor
from clustrix_futures.rundir import SUBDIRECTORIES, RunDir, encode_json, new_run_name
from clustrix_futures.transport import LocalTransport, Transport

log = logging.getLogger(__name__)
T = TypeVar("T")

_PROBE = ("import sys; print('%d.%d' % sys.version_info[:2]); "
          "import importlib.util as u; print(all(u.find_spec(m) for m in ('cloudpickle', 'clustrix_futures')))")
STARTUP_TIMEOUT = 120.0
MIN_MAP_CHUNKS = 16  # without max_workers, a map keeps at least this many elements in parallel


def make_transport(settings: config.Settings) -> Transport:
    if settings["host"] is None:
        return LocalTransport()
    from clustrix_futures.ssh import SSHTransport

    return SSHTransport(settings)


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
        self.backend: Backend
        self._ids = itertools.count()
        self._outstanding: set[ClusterFuture] = set()
        self._submitted = self._unsuccessful = 0
        self._rates: dict[Any, ItemRate] = {}
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
                self._call(self.transport.close(), STARTUP_TIMEOUT)
            self._stop_loop()
            raise
        self.run_dir = environment.run_dir
        self.monitor = Monitor(settings, self.backend, self.transport, environment)
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
        key = getattr(fn, "__code__", None) or id(fn)  # one function (however often re-created), not one name
        with self._lock:
            rate = self._rates.setdefault(key, ItemRate())
        width = self.settings.max_workers or MIN_MAP_CHUNKS
        return AdaptiveSizes(total, self.settings["element_seconds"], width, rate)

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

    @property
    def command_counts(self) -> dict[str, int]:
        return dict(self.monitor.counters.commands)

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
        manifest = await self._read_manifest(attach_to) if attach_to else {}
        python = settings["python"] or manifest.get("python") or (
            sys.executable if settings["host"] is None else "python3")
        probe = await transport.run([python, "-c", _PROBE])
        lines = probe.stdout.split()
        if not probe.ok or len(lines) != 2:
            raise ConfigError(f"the interpreter {python!r} cannot be run on {self._where()}: {probe.describe()}; "
                              f"set the option 'python' to an absolute interpreter path there")
        local = "{}.{}".format(*sys.version_info[:2])
        if lines[0] != local:
            raise ConfigError(f"{python!r} on {self._where()} is Python {lines[0]}, but this client runs Python "
                              f"{local}; cloudpickle needs the same version on both sides. Set the option "
                              f"'python' to a Python {local} interpreter there (e.g. python='/path/to/python{local}')")
        if attach_to:
            run_dir = RunDir(attach_to)
        else:
            work_dir = settings["work_dir"]
            if work_dir.startswith("~"):
                work_dir = (await transport.home()) + work_dir[1:]
            run_dir = RunDir(posixpath.join(work_dir, new_run_name()))
            for sub in ("", *SUBDIRECTORIES):
                await transport.makedirs(run_dir.path(sub) if sub else run_dir.root)
        self.backend = get_backend(settings.backend, BackendContext(python, run_dir.root))
        staged = lines[1] != "True"
        if staged:
            await self._stage_code(run_dir)
        max_array = None
        config_argv = self.backend.config_argv()
        if config_argv:
            answer = await transport.run(config_argv)
            max_array = self.backend.parse_max_array_size(answer.stdout) if answer.ok else None
        if not attach_to:
            await transport.write(run_dir.manifest, encode_json({
                "backend": settings.backend, "options": settings.options, "max_workers": settings.max_workers,
                "python": python, "staged": staged, "client": socket.gethostname(), "pid": os.getpid(),
                "created": time.time()}))
        log.info("run directory %s on %s", run_dir.root, self._where())
        adopted = await self._read_batches(run_dir) if attach_to else []
        return Environment(run_dir, python, staged, max_array), adopted

    async def _read_manifest(self, root: str) -> dict[str, Any]:
        """Take the backend and options of the run being attached to; options given now override them."""
        data = (await self.transport.read_many([RunDir(root).manifest]))[RunDir(root).manifest]
        if data is None:
            raise ConfigError(f"{root} on {self._where()} is not a clustrix-futures run directory (no manifest.json)")
        manifest: dict[str, Any] = json.loads(data)
        given = {k: v for k, v in self.settings.options.items() if v is not None}
        self.settings.backend = manifest["backend"]
        self.settings.options = {**config.validate_options(manifest["options"]), **given}
        if self.settings.max_workers is None:
            self.settings.max_workers = manifest["max_workers"]
        return manifest

    async def _read_batches(self, run_dir: RunDir) -> list[dict[str, Any]]:
        names = [n for n in await self.transport.listdir(run_dir.path("batches")) if n.endswith(".json")]
        contents = await self.transport.read_many([run_dir.path("batches", n) for n in sorted(names)])
        return [json.loads(data) for data in contents.values() if data]

    async def _adopt(self, documents: list[dict[str, Any]]) -> list[ClusterFuture]:
        futures = self.monitor.adopt(documents, lambda task_id: ClusterFuture(task_id, on_cancel=self._on_cancel))
        with self._lock:
            self._ids = itertools.count(max((f.task_id for f in futures), default=-1) + 1)
            self._outstanding.update(futures)
            self._submitted += len(futures)
        for future in futures:
            future.add_done_callback(self._on_done)
        return futures

    async def _stage_code(self, run_dir: RunDir) -> None:
        """Copy what the worker imports (pure Python) into RUN/code."""
        import clustrix_futures

        package = os.path.dirname(os.path.abspath(clustrix_futures.__file__))
        sources = {"clustrix_futures": package, "cloudpickle": os.path.dirname(os.path.abspath(cloudpickle.__file__))}
        for name, directory in sources.items():
            await self.transport.makedirs(posixpath.join(run_dir.code, name))
            for entry in sorted(os.listdir(directory)):
                if entry.endswith(".py"):
                    with open(os.path.join(directory, entry), "rb") as source:
                        await self.transport.write(posixpath.join(run_dir.code, name, entry), source.read())

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
        if self.settings["keep_files"] or self._unsuccessful or self._outstanding:
            log.info("keeping run directory %s (%d of %d tasks did not succeed)", self.run_dir.root,
                     self._unsuccessful + len(self._outstanding), self._submitted)
        else:
            await self.transport.remove_tree(self.run_dir.root)
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
