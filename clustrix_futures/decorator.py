"""The seed project's decorator, as thin sugar over :class:`ClusterPoolExecutor`.

::

    @cluster(backend="slurm", cpus=4, time="01:00:00")
    def simulate(seed): ...

    simulate(3)                    # blocks and returns the result, as the original Clustrix decorator did
    simulate.submit(3)             # a concurrent.futures.Future instead
    list(simulate.map(range(10)))  # Executor.map over the function

One executor per decorated function, made on first use (the arguments are those of ClusterPoolExecutor)
and shut down at interpreter exit; ``simulate.executor`` is it.
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, Optional, TypeVar

from clustrix_futures.executor import ClusterPoolExecutor

R = TypeVar("R")


class ClusterFunction(Generic[R]):
    """A decorated function: calling it runs it through ``executor`` and waits; ``submit`` and ``map``
    are the executor's, with the function filled in. The executor is made on first use, once (thread-safe)."""

    def __init__(self, fn: Callable[..., R], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._options = options
        self._executor: Optional[ClusterPoolExecutor] = None
        self._lock = threading.Lock()

    @property
    def executor(self) -> ClusterPoolExecutor:
        """The function's ``ClusterPoolExecutor``, made with the decorator's options on first use and shut
        down (waiting) at interpreter exit. A bad option raises ``ConfigError`` here, at the first call."""
        with self._lock:
            if self._executor is None:
                self._executor = ClusterPoolExecutor(**self._options)
                atexit.register(self._executor.shutdown)
            return self._executor

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Run the function with these arguments through the executor and wait: its result, or its exception."""
        return self.submit(*args, **kwargs).result()

    def submit(self, *args: Any, **kwargs: Any) -> Future:
        """``executor.submit(fn, *args, **kwargs)``: a future instead of waiting."""
        return self.executor.submit(self._fn, *args, **kwargs)

    def map(self, *iterables: Iterable[Any], **map_options: Any) -> Iterator[R]:
        """``executor.map(fn, *iterables, **map_options)``: ``timeout``, ``chunksize``, ``buffersize`` and
        ``progress`` as ``ClusterPoolExecutor.map``."""
        return self.executor.map(self._fn, *iterables, **map_options)


def cluster(**options: Any) -> Callable[[Callable[..., R]], ClusterFunction[R]]:
    """Run the decorated function through a ClusterPoolExecutor made with ``options``.

    ``options`` are the keyword arguments of ``ClusterPoolExecutor`` (``backend``, ``profile``,
    ``max_workers`` and any option, e.g. ``cpus=4, time="01:00:00"``); nothing is checked or started until
    the first call. Calling the decorated function blocks and returns its result; ``.submit(...)`` returns a
    future, ``.map(...)`` maps it, ``.executor`` is the executor.

    Returns:
        A decorator that turns a function into a ``ClusterFunction``.
    """

    def decorate(fn: Callable[..., R]) -> ClusterFunction[R]:
        return ClusterFunction(fn, options)

    return decorate
