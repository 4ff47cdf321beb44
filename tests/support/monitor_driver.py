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
from clustrix_futures.engine.monitor import Environment, Monitor
from clustrix_futures.future import ClusterFuture
from clustrix_futures.remote.transport import LocalTransport
from clustrix_futures.runfiles.layout import SUBDIRECTORIES, RunDir
from clustrix_futures.serialization import dumps_task
from support.fake_scheduler import FakeScheduler


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
