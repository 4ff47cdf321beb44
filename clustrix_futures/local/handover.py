"""Handing ``initializer`` and ``initargs`` to a local worker at its start, as multiprocessing's "spawn" does.

A ``multiprocessing`` ``Queue``, ``Lock``, ``Event``, ``Pipe`` end (or a ``Manager`` proxy with its authkey) may
only be pickled while a process is being spawned: ``initargs`` are pickled here with multiprocessing's own
spawning machinery (its reducers for connections and sockets, and a stand-in for the spawning ``Popen``), and the
file descriptors those objects need are passed to the worker under the same numbers (``subprocess``'s
``pass_fds``). The worker unpickles them with plain ``pickle``: what the standard library's spawn start method
does, over our socket instead of its pipe. Locks and semaphores are opened by name there.

Objects of a ``"fork"`` context cannot be handed over: their semaphores are unlinked as soon as they are made,
so no fresh interpreter can open them. That is refused here with a ``TypeError`` that says so.
"""

from __future__ import annotations

import io
from collections import ChainMap
from typing import Any

_FORK_CONTEXT = "created in a fork context"


class _Spawning:
    """Stands for multiprocessing's spawning ``Popen`` while ``initargs`` are pickled: collects the descriptors
    the worker must inherit (the reducers call :meth:`DupFd` and :meth:`duplicate_for_child`)."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def DupFd(self, fd: int) -> Any:  # the name multiprocessing's reducers call
        from multiprocessing.popen_spawn_posix import _DupFd

        return _DupFd(self.duplicate_for_child(fd))


def _pickler_class() -> type:
    from multiprocessing.reduction import ForkingPickler

    from clustrix_futures.serialization import TaskPickler

    class HandOverPickler(TaskPickler):
        """A task's pickler (functions of ``__main__`` by value, rebuilt in the worker's one namespace of their
        module) plus multiprocessing's reducers."""

        dispatch_table = ChainMap(TaskPickler.dispatch_table, ForkingPickler._extra_reducers)  # type: ignore[attr-defined]

    return HandOverPickler


def dumps_at_start(obj: Any) -> tuple[bytes, list[int]]:
    """Pickle ``obj`` as for a process being spawned; the bytes and the descriptors to pass to the worker.

    The descriptors belong to the objects pickled: they stay valid (and the same bytes can start several workers)
    as long as those objects live in this process.

    Raises:
        TypeError: Something in ``obj`` cannot be pickled, or is a multiprocessing object of a "fork" context.
    """
    from multiprocessing import context

    spawning = _Spawning()
    buffer = io.BytesIO()
    context.set_spawning_popen(spawning)  # type: ignore[arg-type]
    try:
        _pickler_class()(buffer).dump(obj)
    except Exception as exc:
        raise TypeError(_why(exc)) from exc
    finally:
        context.set_spawning_popen(None)
    return buffer.getvalue(), spawning.fds


def _why(exc: Exception) -> str:
    if _FORK_CONTEXT in str(exc):
        return ("the initializer or its initargs hold a multiprocessing object (a Queue, Lock, Event...) of a "
                "'fork' context: the local pool's workers are fresh interpreters, which cannot open a 'fork' "
                "context's semaphores. Create it from multiprocessing.get_context('spawn') (or 'forkserver'), "
                "e.g. ctx = multiprocessing.get_context('spawn'); ctx.Queue()")
    return f"cannot hand the initializer and its initargs to the workers: {exc}"
