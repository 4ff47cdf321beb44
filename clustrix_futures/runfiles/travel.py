"""How a task's exception travels from the node to the client: as itself whenever its class can be rebuilt there.

On the node, :func:`travelling` picks the first way that works, each checked by a pickle round trip there:

1. the exception itself, when pickle brings it back whole (same class, same ``args``) and it has no chained
   exception to carry: pickle's default, the class's own ``__reduce__`` honoured;
2. a :class:`Carrier`, which unpickles on the client into the exception: either the exception pickled as in 1,
   or, when that round trip fails or changes ``args`` (typically an ``__init__`` taking other arguments than
   ``args``, such as ``def __init__(self, a, b): super().__init__(f"{a}-{b}")``), its class, ``args`` and
   ``__dict__`` (``__notes__`` included), from which it is rebuilt without calling ``__init__``:
   ``cls.__new__(cls, *args)``, then ``args`` and ``__dict__`` set. The carrier also brings the exception's
   ``__cause__``, or when it has none its ``__context__`` unless suppressed (the link its traceback shows),
   travelling the same way, at most :data:`CHAIN_DEPTH` deep;
3. a :class:`~clustrix_futures.errors.RemoteError` (the class's qualified name, ``str()``, the remote traceback
   and the reason), when neither works: ``args`` or ``__dict__`` hold something that does not pickle (a lock,
   a socket, an open file...) or the class's ``__new__`` refuses to run without arguments it cannot be given.

On the client a carrier never raises while it unpickles: when the class cannot be had there (it comes from a
module the node imports and the client does not have) or rebuilding raises anything, ``BaseException``
included, it becomes a ``RemoteError`` saying so. User ``__init__`` code never runs on the client for a
rebuilt exception (its class's ``__new__`` and unpickling hooks of its attributes do).

Standard library, cloudpickle and :mod:`clustrix_futures.errors` only: the node imports this (lazily: at the
first exception a task raises).
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, Optional

import cloudpickle

from clustrix_futures.errors import RemoteError

CHAIN_DEPTH = 8  # chained exceptions (causes of causes...) carried at most
Parts = tuple[type, tuple[Any, ...], dict[str, Any]]
Load = tuple[Optional[BaseException], Optional[Parts], Optional[BaseException], Optional[BaseException]]


class Carrier(Exception):
    """An exception on its way to the client: unpickles into the exception itself (or a RemoteError).

    ``blob`` is the pickled :data:`Load` ``(exception or None, parts or None, cause, context)``; ``type_name``,
    ``message`` and ``text`` are what a RemoteError says if the client cannot rebuild it.
    """

    def __init__(self, blob: bytes, type_name: str, message: str, text: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.blob, self.type_name, self.message, self.text = blob, type_name, message, text

    def __reduce__(self) -> tuple[Any, ...]:
        return (arrive, (self.blob, self.type_name, self.message, self.text))


def travelling(exc: BaseException, text: str, depth: int = CHAIN_DEPTH) -> BaseException:
    """The exception as it should travel: itself, a :class:`Carrier`, or a RemoteError (see the module)."""
    kind = type(exc)
    type_name = f"{kind.__module__}.{kind.__qualname__}"
    plain, problem = _comes_back(exc)
    cause, context = _chained(exc, depth)
    if plain and cause is None and context is None:
        return exc
    loads: list[Load] = [(exc, None, cause, context)] if plain else []
    loads.append((None, (kind, exc.args, dict(getattr(exc, "__dict__", {}))), cause, context))
    for load in loads:
        try:
            blob = cloudpickle.dumps(load, protocol=pickle.HIGHEST_PROTOCOL)
            assemble(pickle.loads(blob))
        except BaseException as failed:  # SystemExit from an attribute's __setstate__ too: not on this node
            problem = failed
            continue
        return Carrier(blob, type_name, _message(exc), text)
    return RemoteError(type_name, _message(exc), text,
                       reason=f"it could not be rebuilt: {type(problem).__name__}: {problem}")


def _comes_back(exc: BaseException) -> tuple[bool, Optional[BaseException]]:
    """Whether pickle's own round trip gives the exception back (same class and ``args``), and if not why."""
    try:
        back = pickle.loads(cloudpickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException as problem:
        return False, problem
    try:
        same = type(back) is type(exc) and bool(back.args == exc.args)
    except Exception:  # args that do not compare (arrays...): trust the round trip, as pickle would
        same = type(back) is type(exc)
    return same, None if same else TypeError(f"the round trip gave {type(back).__name__}{back.args!r}")


def _chained(exc: BaseException, depth: int) -> tuple[Optional[BaseException], Optional[BaseException]]:
    """The exception's cause, or else its context unless suppressed (the one a traceback shows), as it should
    travel; none past ``depth``."""
    if depth <= 0:
        return None, None
    shown_context = exc.__cause__ is None and not exc.__suppress_context__
    linked = [exc.__cause__, exc.__context__ if shown_context else None]
    return tuple(None if link is None else travelling(link, _text(link), depth - 1)  # type: ignore[return-value]
                 for link in linked)


def _text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as problem:
        return f"<str() raised {type(problem).__name__}>"


def assemble(load: Load) -> BaseException:
    """The exception a :data:`Load` describes, rebuilt without calling ``__init__`` when it comes as parts."""
    exc, parts, cause, context = load
    if exc is None:
        assert parts is not None
        kind, args, state = parts
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"{kind!r} is not an exception class")
        exc = kind.__new__(kind, *args)
        exc.args = args
        exc.__dict__.update(state)
    if context is not None:
        exc.__context__ = context
    if cause is not None:
        exc.__cause__ = cause
    return exc


def arrive(blob: bytes, type_name: str, message: str, text: str) -> BaseException:
    """On the client: the exception a :class:`Carrier` brings, or a RemoteError saying why it cannot be had."""
    try:
        return assemble(pickle.loads(blob))
    except BaseException as problem:  # SystemExit or KeyboardInterrupt from a __setstate__ too: this task's only
        return RemoteError(type_name, message, text,
                           reason=f"it could not be rebuilt here: {type(problem).__name__}: {problem}")
