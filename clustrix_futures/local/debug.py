"""The debug backend (``backend="debug"``): each task runs in the calling thread, inside ``submit``.

Like submitit's ``DebugExecutor``: no process, no scheduler, so ``breakpoint()`` and ``pdb`` work in the task,
and a failed future's exception is the very object the task raised, with its live ``__traceback__``
(``pdb.post_mortem(future.exception().__traceback__)`` walks the task's frames). The call is still pickled
by the executor and unpickled here, and the result still makes the pickle round trip, so what would fail to
travel to a cluster fails here too: an unpicklable argument raises ``TypeError`` in ``submit``, an unpicklable
result fails its future with ``TypeError``, and an exception that cannot travel becomes a
:class:`~clustrix_futures.errors.RemoteError`, as on every other backend.

Differences a user may meet: ``submit`` returns a finished future (so ``cancel()`` always returns False),
``max_workers`` and the resource options are ignored, and the user's modules travel by reference (as with
the local pool), so module-level state a task changes is this process's, except that functions shipped by value
(``__main__``'s) share one namespace of their module, kept apart from the real one, as in every worker
(:mod:`clustrix_futures.node.loading`); a task that ends its process (``os._exit``) ends the caller's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, Optional

from clustrix_futures.errors import ConfigError, RemoteError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.mapping.sizing import local_sizes
from clustrix_futures.node.loading import loads_task
from clustrix_futures.remote.files import RemoteFiles, local_files
from clustrix_futures.runfiles.layout import RunDir
from clustrix_futures.runfiles.outcomes import RemoteTraceback, encode_outcome, loads_outcome, travelling_exception
from clustrix_futures.serialization import resolve


class DebugEngine:
    """The executor's ``Engine`` for ``backend="debug"``: runs each payload at once, in the submitting thread."""

    ships_code = False
    run_dir: Optional[RunDir] = None

    def __init__(self, initializer: Optional[bytes] = None) -> None:
        self._ids = itertools.count()
        self.futures: list[ClusterFuture[Any]] = []
        if initializer is not None:
            fn, args, kwargs = loads_task(initializer)
            fn(*args, **kwargs)

    def submit(self, payload: bytes, resources: Optional[Mapping[str, Any]] = None,
               packable: bool = True) -> ClusterFuture[Any]:
        """Run the payload now; return its finished future."""
        future: ClusterFuture[Any] = ClusterFuture(next(self._ids))
        future.set_running_or_notify_cancel()
        fn, args, kwargs = loads_task(payload)
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            travelled, text = travelling_exception(exc)
            if not isinstance(travelled, RemoteError):  # it travels (maybe rebuilt): keep the very object
                travelled = exc
                if exc.__cause__ is None:
                    exc.__cause__ = RemoteTraceback(text)  # as on the other backends; __traceback__ stays live
            future.set_exception(travelled)
            return future
        resolve(future, loads_outcome(encode_outcome((True, value, "", 0.0))[1]))
        return future

    def chunk_sizes(self, total: Optional[int], fn: Callable[..., Any]) -> Iterator[int]:
        """Chunks as for one local worker (the items run one after the other anyway)."""
        return local_sizes(total, 1)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing to wait for: every task ended in its ``submit``."""

    def files(self) -> RemoteFiles:
        return local_files()

    def job_script(self, resources: Optional[Mapping[str, Any]]) -> NoReturn:
        raise ConfigError("job_script() shows what a scheduler backend would submit; the"
                          " debug backend submits no jobs")

    @property
    def command_counts(self) -> dict[str, int]:
        """Always empty: no scheduler runs."""
        return {}


