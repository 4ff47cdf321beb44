"""A map chunk's items as they finish: its part frames read as its journal grows, and the chunk put back together
from its parts and its final outcome, for every reader (the monitor, attach, the local pool), here only.

A running chunk reports its finished items in parts (:func:`~clustrix_futures.runfiles.journal.part_frame`; a
local pool process sends the same body over its socket) and its final outcome holds only the items after the
last part (``ChunkResult.first``). A reader that *streams* a chunk (its future takes parts: a ``map`` consuming
items as they come) hands each :class:`Part` on as it arrives and the final outcome as it is; for any other
reader the parts are kept (:class:`Held`) and the final outcome is made whole again (:func:`assemble`), so what
it sees is the chunk's full ``ChunkResult`` as before.

:class:`JournalCursor` reads a journal by offset: fed the bytes appended since it last read (a running element's
journal, over SFTP by ``read_span``, or an S3 run's numbered pieces), it yields the new outcomes and parts.

Client side (it unpickles); standard library, cloudpickle and :mod:`clustrix_futures.runfiles` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional, Protocol

import cloudpickle

from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.outcomes import ChunkResult, Outcome, undecodable

_PICKLE_PROTOCOL, _PICKLE_STOP = b"\x80", b"."


class Part:
    """``count`` finished items of a chunk from its item ``first``; ``decode()`` gives ``(values, failures)``
    (failures keyed by the item's position in the chunk). The blob is unpickled only when decoded."""

    __slots__ = ("blob", "count", "first")

    def __init__(self, first: int, count: int, blob: bytes) -> None:
        self.first, self.count, self.blob = first, count, blob

    @classmethod
    def from_message(cls, data: bytes) -> Optional[Part]:
        """The part a local pool process sent (a part body), or None if ``data`` is not one."""
        if not data.startswith(journal.PART_TAG) or len(data) < journal.PART.size:
            return None
        _, first, count = journal.PART.unpack_from(data)
        return cls(first, count, data[journal.PART.size:])

    def decode(self) -> tuple[list[Any], dict[int, tuple[BaseException, str]]]:
        """Never raises: a blob whose unpickling raises (even SystemExit) fails the part at its first item."""
        try:
            values, failures = cloudpickle.loads(self.blob)
        except BaseException as exc:
            return [None] * self.count, {self.first: undecodable(exc, "a part of the map chunk's values")}
        return values, failures


class Streamed(Protocol):
    """What takes a chunk's parts as they come: a future of a streaming ``map``
    (:meth:`clustrix_futures.future.ClusterFuture._add_part`); False if it does not stream."""

    def _add_part(self, part: Part) -> bool: ...


class Held:
    """The parts of chunks whose futures do not stream, kept until their final outcome makes them whole."""

    def __init__(self) -> None:
        self._parts: dict[int, list[Part]] = {}

    def part(self, task_id: int, future: Streamed, part: Part) -> None:
        """A part of task ``task_id``: handed to its future if it streams, else kept."""
        if not future._add_part(part):
            self._parts.setdefault(task_id, []).append(part)

    def outcome(self, task_id: int, outcome: Outcome) -> Outcome:
        """The final outcome of task ``task_id``, made whole from its kept parts (a streamed chunk's, kept
        none, stays as it is: its future has the parts)."""
        parts = self._parts.pop(task_id, None)
        return assemble(outcome, parts) if parts else outcome

    def drop(self, task_id: int) -> None:
        self._parts.pop(task_id, None)


def assemble(outcome: Outcome, parts: list[Part]) -> Outcome:
    """A chunk's outcome with the items of its ``parts`` put back in front of its own: the whole chunk. A failed
    outcome stays as it is. Items missing between the parts and the outcome fail the chunk saying so."""
    ok, chunk, text, seconds = outcome
    if not ok or not isinstance(chunk, ChunkResult):
        return outcome
    values: list[Any] = []
    failures: dict[int, tuple[BaseException, str]] = {}
    for part in parts:
        if part.first + part.count <= len(values):
            continue  # had it (an element run again reports from item 0)
        if part.first > len(values):
            break
        part_values, part_failures = part.decode()
        values.extend(part_values[len(values) - part.first:])
        failures.update(part_failures)
    if chunk.first > len(values):
        error = ValueError(f"items {len(values)} to {chunk.first - 1} of the map chunk were reported in parts "
                           f"that did not arrive")
        return (False, error, f"ValueError: {error}", seconds)
    values.extend(chunk.values[len(values) - chunk.first:])
    failures.update(chunk.failures)
    return (True, ChunkResult(values, failures, chunk.seconds, stopped_at=chunk.stopped_at), text, seconds)


class JournalCursor:
    """How far one journal has been read (``offset``, at the end of a complete frame), the parts kept
    from it (``held``) and the tasks it says checkpointed (``checkpointed``). :meth:`feed` takes the
    journal's bytes from ``offset`` on."""

    __slots__ = ("checkpointed", "held", "offset")

    def __init__(self, held: Optional[Held] = None) -> None:
        self.offset = 0
        self.held = held or Held()
        self.checkpointed: list[int] = []

    def feed(self, data: bytes) -> Iterator[tuple[int, Optional[bytes], Optional[Part]]]:
        """The new frames that matter, in order: ``(task_id, encoded outcome, None)`` for an outcome and
        ``(task_id, None, part)`` for a part; ``offset`` moves past each frame as it is yielded. A torn last
        frame waits for the next feed; a damaged frame raises ``ValueError`` (as
        :func:`~clustrix_futures.runfiles.journal.read_journal`), a journal of another version
        :class:`~clustrix_futures.runfiles.journal.UnknownJournalVersion`."""
        base = self.offset
        for frame in journal.read_frames(data, resume=base > 0):
            end = base + frame.offset + frame.size
            if frame.kind not in journal.KINDS:
                raise ValueError(f"the frame at byte {base + frame.offset - journal.HEADER.size} has an unknown "
                                 f"kind {frame.kind}")
            if frame.kind in (journal.OK, journal.RAISED):
                body = data[frame.offset:frame.offset + frame.size]
                if not (body.startswith(_PICKLE_PROTOCOL) and body.endswith(_PICKLE_STOP)):
                    raise ValueError(f"the frame at byte {base + frame.offset - journal.HEADER.size} (task "
                                     f"{frame.task_id}) does not hold a pickled outcome")
                self.offset = end
                yield frame.task_id, body, None
                continue
            found = journal.read_part(data, frame)
            self.offset = end
            if journal.is_checkpoint(data, frame):
                self.checkpointed.append(frame.task_id)
            if found is not None:
                yield frame.task_id, None, Part(*found)
        if base == 0 and self.offset == 0 and len(data) >= journal.PREAMBLE.size:
            self.offset = journal.PREAMBLE.size
