"""A :class:`~clustrix_futures.engine.monitor.Monitor` over the fake scheduler, the local transport and a
temporary run directory, its loop in a thread of its own (as the engine runs it): tests hand it work only
through the monitor's thread-safe methods ``submit``, ``cancel`` and ``stop``, and wait on the futures."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clustrix_futures import config
from clustrix_futures.engine import monitor as monitor_module
from clustrix_futures.engine.monitor import Environment
from clustrix_futures.future import ClusterFuture
from clustrix_futures.remote.transport import LocalTransport
from clustrix_futures.runfiles.layout import SUBDIRECTORIES, RunDir
from clustrix_futures.serialization import dumps_task
from support.fake_scheduler import FakeScheduler

Monitor: Any = monitor_module.Monitor

# TEMPORARY, for the lead to remove when the engine branch is merged: until then the Monitor takes work through
# fields other threads write (inbox, cancelled, stopping); this gives it the agreed thread-safe methods, the
# way the engine used them. With the engine branch's Monitor (which has ``submit``) it is not used.
if not hasattr(Monitor, "submit"):
    class _MonitorWithMethods(Monitor):  # type: ignore[misc, valid-type]
        _loop: asyncio.AbstractEventLoop | None = None

        async def run(self) -> None:
            self._loop = asyncio.get_running_loop()
            await super().run()

        def _poke(self) -> None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.wake)

        def submit(self, task_id: int, future: ClusterFuture, payload: bytes, resources: Any, packable: bool) -> None:
            self.inbox.append((task_id, future, payload, resources, packable))
            self._poke()

        def cancel(self, task_id: int) -> None:
            self.cancelled.append(task_id)
            self._poke()

        def stop(self) -> None:
            self.stopping = True
            self._poke()

    Monitor = _MonitorWithMethods


class Driver:
    """One monitor run: ``submit(fn, *args)`` gives a future; leaving the ``with`` block stops the monitor and
    waits for its ``run()`` to return."""

    def __init__(self, root: Path, scheduler_for: Callable[[RunDir], FakeScheduler], **options: Any) -> None:
        for sub in ("", *SUBDIRECTORIES):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir = RunDir(str(root))
        self.scheduler = scheduler_for(self.run_dir)
        settings = config.Settings("fake", None, config.validate_options({"poll_interval": 0.2, **options}))
        self.monitor = Monitor(settings, self.scheduler, LocalTransport(),
                               Environment(self.run_dir, sys.executable, False, None))
        self._ids = 0
        self._loop = asyncio.new_event_loop()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self.monitor.run())
        finally:
            self._done.set()

    def submit(self, fn: Callable[..., Any], *args: Any, packable: bool = True) -> ClusterFuture:
        future = ClusterFuture(self._ids, on_cancel=lambda f: self.monitor.cancel(f.task_id))
        self.monitor.submit(self._ids, future, dumps_task(fn, args, {}, True), None, packable)
        self._ids += 1
        return future

    def stop(self, timeout: float = 30) -> None:
        self.monitor.stop()
        assert self._done.wait(timeout), "the monitor did not stop"
        self._loop.close()


@contextmanager
def driven(root: Path, scheduler_for: Callable[[RunDir], FakeScheduler], **options: Any) -> Iterator[Driver]:
    driver = Driver(root, scheduler_for, **options)
    driver._thread.start()
    try:
        yield driver
    finally:
        driver.stop()
