"""Checkpoints before the end: a task that saves its state when its time is nearly up, and resumes from it.

With ``signal_before_end=SECONDS`` (SLURM), each element is sent a warning signal (``SIGUSR1``) that many seconds
before its time limit. If the task it is running offers a checkpoint hook, the worker calls it then: a callable
with a ``checkpoint`` method, called with the task's own arguments, returning the :class:`Resume` to run instead
of the task when its element runs again (or None: no checkpoint, the task runs on and may reach its limit).
The element then ends at once, and the monitor runs it again (its unfinished tasks only) up to
``checkpoint_reruns`` times; the future gets the resumed call's result as if nothing had happened.

:class:`Checkpointable` is the usual shape: subclass it, keep your progress on ``self`` as ``__call__`` goes, and
the default hook resumes by calling the object again, state and all::

    class Train(Checkpointable):
        def __init__(self):
            self.epoch = 0
        def __call__(self, epochs):
            while self.epoch < epochs:
                step()
                self.epoch += 1
            return self.epoch

    ex.submit(Train(), 100)

The hook runs inside the signal handler, between two bytecodes of the task (Python runs handlers in the main
thread): it sees the task's state as of then. This module is the node's too: standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional


class Resume:
    """What a checkpoint hook returns: the call (``fn(*args, **kwargs)``) that carries the task on from its
    checkpoint. It must pickle (with cloudpickle, as a task's arguments do)."""

    def __init__(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __repr__(self) -> str:
        return f"Resume({self.fn!r}, *{self.args!r}, **{self.kwargs!r})"


class Checkpointable:
    """A task object whose checkpoint is itself, as it stands: :meth:`checkpoint` resumes by calling the object
    again with the same arguments. Override :meth:`checkpoint` to save something else, or to return None
    when there is nothing worth keeping."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a Checkpointable task defines __call__")

    def checkpoint(self, *args: Any, **kwargs: Any) -> Optional[Resume]:
        return Resume(self, *args, **kwargs)
