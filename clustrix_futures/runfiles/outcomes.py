"""Outcomes: what running a task gives, encoded on the node and decoded on the client, in this module only.

An *outcome* is ``(ok, value_or_exception, traceback_text, seconds)``: ``ok`` tells whether the task returned
(``value``) or raised (the exception, with its formatted remote traceback). It travels as
``cloudpickle.dumps(outcome)`` (:func:`encode_outcome`), and it always unpickles: a result that cannot be pickled
becomes a ``TypeError`` outcome, and an exception that cannot make the round trip becomes a
:class:`~clustrix_futures.errors.RemoteError` (:func:`travelling_exception`). A map chunk's outcome value is a
:class:`ChunkResult`.

On the client, :func:`loads_outcome` decodes (never raising: an outcome that does not unpickle there becomes a
``RemoteError`` outcome; :func:`decode_outcome` raises instead), :func:`failure_of` says in a line what went
wrong, :func:`exception_of` gives a failed outcome's exception with a
:class:`RemoteTraceback` as its cause, and :func:`unpack_items` a chunk's values.

Standard library, cloudpickle and :mod:`clustrix_futures.errors` only: the node imports this.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Iterator
from typing import Any, Optional

import cloudpickle

from clustrix_futures.errors import RemoteError

Outcome = tuple[bool, Any, str, float]


def travelling_exception(exc: BaseException) -> tuple[BaseException, str]:
    """The exception as it should travel (itself, or a RemoteError if it cannot make the pickle round trip),
    with its formatted traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.loads(cloudpickle.dumps(exc))
    except Exception:
        kind = type(exc)
        return RemoteError(f"{kind.__module__}.{kind.__qualname__}", str(exc), text), text
    return exc, text


def encode_outcome(outcome: Outcome) -> tuple[bool, bytes]:
    """The outcome's bytes, and whether they say the task succeeded (a result that does not pickle turns the
    outcome into a failure; a chunk's unpicklable values fail just their items)."""
    try:
        return outcome[0], cloudpickle.dumps(outcome)
    except Exception as exc:
        ok, value, _, seconds = outcome
        if ok and isinstance(value, ChunkResult):
            return encode_outcome((True, _picklable_chunk(value), "", seconds))
        problem = _unpicklable_result(value, exc) if ok else value
        err, text = travelling_exception(problem)
        return False, cloudpickle.dumps((False, err, text, seconds))


def _unpicklable_result(value: Any, exc: Exception) -> TypeError:
    return TypeError(f"the task's result, a {type(value).__qualname__}, could not be pickled: {exc}")


class ChunkResult:
    """The values of a map chunk, item by item, with the failures of the items that raised.

    ``failures`` maps an item's position to ``(exception, traceback text)``; its slot in ``values`` is None.
    ``seconds`` is how long the items ran, for sizing later chunks. ``stopped_at`` is None when the chunk ran
    to its end; otherwise its time budget ran out after its first ``stopped_at`` items (``values`` holds just
    those; the rest, possibly none, did not run). ``values`` and ``failures`` travel as one pickled blob,
    decoded only when first read: a client holding many finished chunks the consumer has not reached yet
    holds compact bytes, not millions of objects.

    ``first``: the chunk's items before it were reported while it ran, in part frames
    (:mod:`clustrix_futures.runfiles.parts`), and ``values`` holds the items from ``first`` on; ``failures``
    keeps the positions in the whole chunk. A chunk with ``first`` travels with one more argument, which an
    older client's ``ChunkResult`` refuses: it fails the chunk rather than return too few items.
    """

    __slots__ = ("_blob", "_failures", "_values", "first", "seconds", "stopped_at")

    def __init__(self, values: Optional[list[Any]], failures: Optional[dict[int, tuple[BaseException, str]]],
                 seconds: float, blob: Optional[bytes] = None, stopped_at: Optional[int] = None,
                 first: int = 0) -> None:
        self._values = values
        self._failures = failures
        self.seconds = seconds
        self._blob = blob
        self.stopped_at = stopped_at
        self.first = first

    def _decode(self) -> None:
        if self._blob is not None:
            self._values, self._failures = pickle.loads(self._blob)
            self._blob = None

    @property
    def values(self) -> list[Any]:
        self._decode()
        assert self._values is not None
        return self._values

    @property
    def failures(self) -> dict[int, tuple[BaseException, str]]:
        self._decode()
        assert self._failures is not None
        return self._failures

    def __reduce__(self) -> tuple[Any, ...]:
        blob = self._blob or cloudpickle.dumps((self._values, self._failures), protocol=pickle.HIGHEST_PROTOCOL)
        if self.first:
            return (ChunkResult, (None, None, self.seconds, blob, self.stopped_at, self.first))
        return (ChunkResult, (None, None, self.seconds, blob, self.stopped_at))


def _picklable_chunk(chunk: ChunkResult) -> ChunkResult:
    """A chunk whose values did not all pickle: fail exactly the items that do not."""
    for position, value in enumerate(chunk.values):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            chunk.values[position] = None
            chunk.failures[chunk.first + position] = travelling_exception(_unpicklable_result(value, exc))
    return chunk


# ---------------------------------------------------------------- on the client


class RemoteTraceback(Exception):
    """Carries the remote traceback text; attached as ``__cause__`` of a task's exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return '\n"""\n' + self.text + '"""'


def decode_outcome(data: bytes) -> Outcome:
    """Decode an outcome, raising what unpickling raised if it does not unpickle here."""
    outcome: Outcome = cloudpickle.loads(data)
    return outcome


def loads_outcome(data: bytes) -> Outcome:
    """Decode an outcome; one that does not unpickle here is a failed outcome saying so (a RemoteError)."""
    try:
        return decode_outcome(data)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        return (False, RemoteError(type(exc).__name__, f"the task's outcome could not be unpickled: {exc}",
                                   text), text, 0.0)


def exception_of(outcome: Outcome) -> BaseException:
    """A failed outcome's exception, its remote traceback attached as its cause."""
    _, exc, text, _ = outcome
    exc.__cause__ = RemoteTraceback(text)
    return exc


def failure_of(outcome: Outcome) -> Optional[tuple[str, str]]:
    """What went wrong, in one line, and its traceback; None if the task (every item of a chunk) succeeded."""
    ok, value, text, _ = outcome
    if not ok:
        return f"{type(value).__name__}: {value}".strip(), text
    if isinstance(value, ChunkResult) and value.failures:
        first, (error, trace) = min(value.failures.items())
        return (f"{len(value.failures)} of {value.first + len(value.values)} map items raised, the first "
                f"(item {first} of the chunk): {type(error).__name__}: {error}"), trace
    return None


def unpack_items(chunk: ChunkResult) -> Iterator[Any]:
    """Yield a map chunk's values in order, raising at the first item that failed."""
    if not chunk.failures:
        yield from chunk.values
        return
    first = min(chunk.failures)
    yield from chunk.values[:first - chunk.first]
    exc, text = chunk.failures[first]
    exc.__cause__ = RemoteTraceback(text)
    raise exc
