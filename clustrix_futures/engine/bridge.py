"""The thread <-> loop bridge: one asyncio event loop on a daemon thread, driven from any other thread.

The cluster engine's I/O (transport, storage, scheduler, monitor) runs as coroutines on this loop; the
executor's threads reach it through :meth:`LoopThread.call` (run a coroutine there and wait for its result),
which goes through asyncio's thread-safe entry point. Work handed over without waiting goes through the
monitor's own thread-safe methods (:class:`~clustrix_futures.engine.monitor.Monitor`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

STOP_JOIN_SECONDS = 5.0  # how long stop() waits for the loop's thread


class LoopThread:
    """An event loop running forever on its own daemon thread, started by the constructor.

    The loop is stopped (by :meth:`stop`, or by a coroutine on it calling ``loop.stop``) but never closed, so
    a late ``call_soon_threadsafe`` from another thread (a future cancelled after shutdown) is queued and
    dropped rather than raising.
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` on the loop; its result, or its exception, in the calling thread.

        Raises ``TimeoutError`` (``concurrent.futures.TimeoutError``) after ``timeout`` seconds; the coroutine
        keeps running then. Must not be called from the loop's own thread (it would wait on itself).
        """
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop and wait (a few seconds at most) for its thread to end."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_JOIN_SECONDS)
