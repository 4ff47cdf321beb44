"""The executor's initializer on a scheduler backend: :class:`RunInitializer`.

The initializer's payload (``initializer(*initargs)``, pickled as a task is) is written once per run into the run
directory (:attr:`~clustrix_futures.runfiles.layout.RunDir.initializer`), before anything is submitted; each
array element runs it before its first task (:mod:`clustrix_futures.node.initializer`). An element whose
initializer raised fails each of its tasks with :class:`~clustrix_futures.errors.ExecutorBrokenError`; the first
such future seen marks the executor broken, and every later ``submit`` raises that error.
"""

from __future__ import annotations

import concurrent.futures
from typing import Optional

from clustrix_futures.errors import ExecutorBrokenError
from clustrix_futures.remote.storage import Storage
from clustrix_futures.runfiles.layout import RunDir


class RunInitializer:
    """A run's initializer (``payload``; None: the run has none) and whether it has broken the executor.

    ``check`` and ``on_done`` may be called from any thread (one attribute, written once); ``stage`` runs on
    the engine's loop."""

    def __init__(self, payload: Optional[bytes]) -> None:
        self.payload = payload
        self.broken: Optional[ExecutorBrokenError] = None

    async def stage(self, storage: Storage, run_dir: RunDir) -> None:
        """Write the initializer file of the run (nothing without an initializer)."""
        if self.payload is not None:
            await storage.write(run_dir.initializer, self.payload)

    def on_done(self, future: concurrent.futures.Future) -> None:
        """A future's done-callback: a task that failed with the broken-executor error breaks the executor."""
        if self.broken is None and not future.cancelled():
            error = future.exception()
            if isinstance(error, ExecutorBrokenError):
                self.broken = error

    def check(self) -> None:
        """Raise the broken-executor error if an element's initializer raised."""
        if self.broken is not None:
            raise ExecutorBrokenError(str(self.broken))
