"""Outcomes: what running a task gives, encoded on the node and decoded on the client, in this module only.

An *outcome* is ``(ok, value_or_exception, traceback_text, seconds)``: ``ok`` tells whether the task returned
(``value``) or raised (the exception, with its formatted remote traceback). It travels as
``cloudpickle.dumps(outcome)`` (:func:`encode_outcome`), and it always unpickles: a result that cannot be pickled
becomes a ``TypeError`` outcome, and an exception travels as itself, rebuilt on the client if need be, or as a
:class:`~clustrix_futures.errors.RemoteError` if it cannot be rebuilt (:func:`travelling_exception`, and
:mod:`clustrix_futures.runfiles.travel` for how). A map chunk's outcome value is a
:class:`ChunkResult`.

On the client, :func:`loads_outcome` decodes (never raising, whatever unpickling raises, ``BaseException``
included: an outcome that does not unpickle there becomes a ``RemoteError`` outcome, failing that future only;
:func:`decode_outcome` raises instead; a chunk's values that do not unpickle fail its first item likewise),
:func:`failure_of` says in a line what went wrong, :func:`exception_of` gives a failed outcome's exception with a
:class:`RemoteTraceback` as its cause, and :func:`unpack_items` a chunk's values.

Standard library, cloudpickle and (lazily, on failures) :mod:`clustrix_futures.errors` only: the node imports
this.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Iterator
from typing import Any, Optional

import cloudpickle

Outcome = tuple[bool, Any, str, float]


def travelling_exception(exc: BaseException) -> tuple[BaseException, str]:
    """The exception as it should travel, with its formatted traceback (see :mod:`.travel`): itself when
    pickle brings it back whole, else a carrier that rebuilds it on the client, else a RemoteError."""
    from clustrix_futures.runfiles.travel import travelling

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return travelling(exc, text), text


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
            try:
                self._values, self._failures = pickle.loads(self._blob)
            except BaseException as exc:  # SystemExit from a value's __setstate__ too: this chunk fails, only
                self._values, self._failures = [], {0: undecodable(exc, "the map chunk's values")}
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
    """Decode an outcome, raising what unpickling raised if it does not unpickle here (or TypeError if what it
    holds is not an outcome)."""
    outcome: Outcome = cloudpickle.loads(data)
    if not (type(outcome) is tuple and len(outcome) == 4 and (outcome[0] or isinstance(outcome[1], BaseException))):
        raise TypeError(f"a {type(outcome).__name__} is not a task's outcome")
    return outcome


def loads_outcome(data: bytes) -> Outcome:
    """Decode an outcome; one that does not unpickle here is a failed outcome saying so (a RemoteError).

    Never raises: whatever unpickling raises, ``SystemExit`` or ``KeyboardInterrupt`` from a result's
    ``__setstate__`` included, fails only this outcome's future, and the reader that called it goes on."""
    try:
        return decode_outcome(data)
    except BaseException as exc:
        error, text = undecodable(exc, "the task's outcome")
        return (False, error, text, 0.0)


def undecodable(exc: BaseException, what: str) -> tuple[BaseException, str]:
    """A RemoteError saying that unpickling ``what`` raised ``exc``, with its traceback text."""
    from clustrix_futures.errors import RemoteError

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return RemoteError(type(exc).__name__, f"{what} could not be unpickled here: {exc!r}", text), text


def exception_of(outcome: Outcome) -> BaseException:
    """A failed outcome's exception, its remote traceback attached (:func:`with_remote_traceback`)."""
    _, exc, text, _ = outcome
    return with_remote_traceback(exc, text)


def with_remote_traceback(exc: BaseException, text: str) -> BaseException:
    """The exception, with a :class:`RemoteTraceback` of ``text`` as the ``__cause__`` of the last exception
    of its chain: of itself when it has no cause or context (as ProcessPoolExecutor does); else after the
    causes and contexts it brought back, which stay as they were raised."""
    end, seen = exc, {id(exc)}
    while True:
        link = end.__cause__ if end.__cause__ is not None else None if end.__suppress_context__ else end.__context__
        if link is None or id(link) in seen:
            break
        end = link
        seen.add(id(link))
    end.__cause__ = RemoteTraceback(text)
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
    raise with_remote_traceback(exc, text)
