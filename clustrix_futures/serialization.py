"""Client-side pickling: tasks out (failing loudly, naming the culprit), outcomes back into futures."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import cloudpickle

from clustrix_futures.errors import RemoteError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.worker import Outcome


class RemoteTraceback(Exception):
    """Carries the remote traceback text; attached as ``__cause__`` of a task's exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return '\n"""\n' + self.text + '"""'


def _describe(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__} object" if kind.__module__ != "builtins" else kind.__name__


def _culprit(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    parts = [("the function " + repr(getattr(fn, "__qualname__", fn)), fn)]
    parts += [(f"positional argument {i}", value) for i, value in enumerate(args)]
    parts += [(f"keyword argument {name!r}", value) for name, value in kwargs.items()]
    for label, value in parts:
        try:
            cloudpickle.dumps(value)
        except Exception:
            return f"{label} ({_describe(value)})"
    return "the call"


def dumps_task(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """Pickle a call with cloudpickle; raise ``TypeError`` naming what could not be pickled."""
    try:
        return cloudpickle.dumps((fn, tuple(args), dict(kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"cannot submit: {_culprit(fn, args, kwargs)} could not be pickled: {exc}") from exc


def loads_outcome(data: bytes) -> Outcome:
    try:
        outcome: Outcome = cloudpickle.loads(data)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        return (False, RemoteError(type(exc).__name__, f"the task's outcome could not be unpickled: {exc}",
                                   text), text, 0.0)
    return outcome


def exception_of(outcome: Outcome) -> BaseException:
    _, exc, text, _ = outcome
    exc.__cause__ = RemoteTraceback(text)
    return exc


def resolve(future: ClusterFuture, outcome: Outcome) -> None:
    """Set the future's result or exception from an outcome, unless it has already ended."""
    if outcome[0]:
        future.set_result_if_pending(outcome[1])
    else:
        future.set_exception_if_pending(exception_of(outcome))


def unpack_items(outcomes: Sequence[Outcome]) -> Iterator[Any]:
    """Yield the values of a map chunk's item outcomes in order, raising at the first failed item."""
    for outcome in outcomes:
        if not outcome[0]:
            raise exception_of(outcome)
        yield outcome[1]
