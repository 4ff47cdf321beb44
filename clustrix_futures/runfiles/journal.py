"""The result journal (version 2): how an array element reports its tasks' outcomes, written and read here only.

::

    journal := preamble frame*
    preamble := MAGIC (4 bytes, b"CFJL") VERSION (uint16, little-endian)
    frame    := header body
    header   := task id (uint64) kind (uint8) start (float64) end (float64) body length (uint64), little-endian
    body     := the encoded outcome (:mod:`clustrix_futures.runfiles.outcomes`) for the kinds OK and RAISED

``start`` and ``end`` are the task's wall-clock times (``time.time()``) on the node. A reader counts outcomes
and times tasks from the headers alone (:func:`read_frames`), without unpickling a body, and can read a journal
still being appended to: a torn last frame is not an error. The kinds SKIPPED (a task passed over for its skip
marker) and PROGRESS (news from a running task) carry no outcome, and :func:`read_journal` passes over them.
A PROGRESS frame whose body is :data:`OUTPUT` (two uint64, little-endian) is written as a task starts: the
byte offsets in the element's stdout and stderr logs where that task's output begins (:func:`output_frame`;
a task's output ends where the next task's begins, or at the end of the log; :func:`output_spans`). Any other
kind is damage (a new kind needs a new version).

A PROGRESS body of another length starts with a 4-byte tag. :data:`PART_TAG` is a *part frame*: items of a
map chunk that finished while the chunk still runs (:func:`part_frame`, :func:`read_part`)::

    part body := PART_TAG (b"CFPT") first (uint64) count (uint64) blob

``blob`` is ``pickle((values, failures))`` of the chunk's items ``first`` to ``first + count - 1`` (``failures``
keyed by the item's position in the chunk, see :class:`~clustrix_futures.runfiles.outcomes.ChunkResult`); a
reader knows what a part holds from its 20-byte head, without unpickling. The chunk's final outcome then holds
only the items from the end of its last part on (its ``ChunkResult.first``): no item travels twice. A part body
is never 16 bytes long (its head alone is 20), so a reader that knows only OUTPUT bodies (an older client)
passes over parts, and such a client fails the chunk loudly on the final outcome it cannot unpickle (a
``ChunkResult`` with a ``first``) rather than returning too few items. Putting the parts back together is
:mod:`clustrix_futures.runfiles.parts`, in one place, for every reader.

A PROGRESS frame whose task id is :data:`ELEMENT` and whose body starts with :data:`MEASURE_TAG` is the element
measuring itself (:func:`measure_frame`, written by :mod:`clustrix_futures.node.measure`), once as it starts and
once as it ends: ``MEASURE`` (tag, phase START or END, CPU seconds (float64), peak RSS in bytes (uint64), and
three filesystem modification times (float64): the journal's just after its preamble, the batch file's and the
batch script's; 0.0 where unknown) followed by the node's name in UTF-8. Its header's ``start`` is when the
element started and ``end`` when the frame was made (node clock). Its body is never 16 bytes long, so readers of
output frames pass over it, and so does :func:`read_journal`; :func:`read_measures` reads them.

A PROGRESS frame whose body is :data:`CHECKPOINT_TAG` alone says the task checkpointed (``signal_before_end``,
:mod:`clustrix_futures.node.checkpointing`): its element wrote ``batches/task-TASK.resume``, the call to run
instead of the task's payload when the element runs again, and ended without running the task further.

A journal of another version raises :class:`UnknownJournalVersion` (a ``ValueError``) saying which version it
is and which one this client reads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Optional

MAGIC = b"CFJL"
VERSION = 2
OK, RAISED, SKIPPED, PROGRESS = 0, 1, 2, 3
KINDS = (OK, RAISED, SKIPPED, PROGRESS)
PREAMBLE = struct.Struct("<4sH")
HEADER = struct.Struct("<QBddQ")
OUTPUT = struct.Struct("<QQ")  # a PROGRESS body: where the task's output starts in the element's stdout, stderr
PART_TAG = b"CFPT"
PART = struct.Struct("<4sQQ")  # the head of a part body: the tag, the chunk's first item in it, and how many
ELEMENT = (1 << 64) - 1  # the task id of a frame about the element itself, not one of its tasks
MEASURE_TAG = b"CFMS"
MEASURE_START, MEASURE_END = 0, 1
CHECKPOINT_TAG = b"CFCK"
MEASURE = struct.Struct("<4sBdQddd")
_PICKLE_PROTOCOL, _PICKLE_STOP = b"\x80", b"."  # the first and last opcodes of every pickle of protocol 2 or more


class UnknownJournalVersion(ValueError):
    """A result journal this client cannot read: written by a worker of another journal version."""


class Frame:  # a plain class: making a NamedTuple costs the node's start-up
    """One frame's header (``task_id``, ``kind``, ``start``, ``end``, and the ``size`` of its body), and the
    ``offset`` of its body in the journal's bytes."""

    __slots__ = ("end", "kind", "offset", "size", "start", "task_id")

    def __init__(self, task_id: int, kind: int, start: float, end: float, size: int, offset: int) -> None:
        self.task_id, self.kind, self.start, self.end, self.size, self.offset = task_id, kind, start, end, size, offset

    def __repr__(self) -> str:
        return (f"Frame(task_id={self.task_id}, kind={self.kind}, start={self.start}, end={self.end}, "
                f"size={self.size}, offset={self.offset})")


def preamble() -> bytes:
    """The bytes a journal starts with."""
    return PREAMBLE.pack(MAGIC, VERSION)


def encode_frame(task_id: int, kind: int, start: float, end: float, body: bytes = b"") -> bytes:
    return HEADER.pack(task_id, kind, start, end, len(body)) + body


def read_frames(data: bytes, resume: bool = False) -> Iterator[Frame]:
    """The frames of a journal, in order, from their headers (no body is unpickled).

    A journal shorter than its preamble (just created) has no frames; a torn last frame ends the iteration
    quietly. :class:`UnknownJournalVersion` if the journal is not of version 2. ``resume``: ``data`` is the
    rest of a journal from the end of a frame on (no preamble), read after what was read before.
    """
    if resume:
        yield from _frames_from(data, 0)
        return
    if len(data) < PREAMBLE.size:
        if not preamble().startswith(data):
            raise UnknownJournalVersion(f"the result journal does not start with the journal preamble; this "
                                        f"client reads journal version {VERSION}")
        return
    magic, version = PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise UnknownJournalVersion(f"the result journal does not start with {MAGIC!r} (it is not a journal, or "
                                    f"one of version 1, from an older worker); this client reads journal "
                                    f"version {VERSION}")
    if version != VERSION:
        raise UnknownJournalVersion(f"the result journal is of version {version}, unknown to this client, "
                                    f"which reads journal version {VERSION}")
    yield from _frames_from(data, PREAMBLE.size)


def _frames_from(data: bytes, position: int) -> Iterator[Frame]:
    while position + HEADER.size <= len(data):
        task_id, kind, start, end, size = HEADER.unpack_from(data, position)
        offset = position + HEADER.size
        if offset + size > len(data):
            return
        yield Frame(task_id, kind, start, end, size, offset)
        position = offset + size


def read_journal(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The ``(task_id, encoded outcome)`` of each outcome frame (OK or RAISED) of a journal, in order.

    A torn last frame (a journal still being written, or cut by a crash) ends the iteration quietly; a damaged
    frame (an unknown kind, a body that is not shaped as a pickle: no body is unpickled here) raises
    ``ValueError``, after the good frames before it were yielded, and so does a journal of another version
    (:class:`UnknownJournalVersion`).
    """
    for frame in read_frames(data):
        if frame.kind not in KINDS:
            raise ValueError(f"the frame at byte {frame.offset - HEADER.size} has an unknown kind {frame.kind}")
        if frame.kind not in (OK, RAISED):
            continue
        body = data[frame.offset:frame.offset + frame.size]
        if not (body.startswith(_PICKLE_PROTOCOL) and body.endswith(_PICKLE_STOP)):
            raise ValueError(f"the frame at byte {frame.offset - HEADER.size} (task {frame.task_id}) does not hold "
                             f"a pickled outcome")
        yield frame.task_id, body


def output_frame(task_id: int, when: float, stdout_offset: int, stderr_offset: int) -> bytes:
    """The PROGRESS frame saying where a task starting now (``when``) begins in its element's two logs."""
    return encode_frame(task_id, PROGRESS, when, when, OUTPUT.pack(stdout_offset, stderr_offset))


Span = tuple[int, Optional[int]]  # [start, end) in a log; end None: to the end of the log


def output_spans(data: bytes, task_id: int) -> Optional[tuple[Span, Span]]:
    """Where a task's output lies in its element's stdout and stderr, from the journal's output frames; None if
    the journal has none for the task (written by an older worker, or the task has not started)."""
    starts = [(frame.task_id, OUTPUT.unpack_from(data, frame.offset)) for frame in read_frames(data)
              if frame.kind == PROGRESS and frame.size == OUTPUT.size]
    for position, (tid, (out, err)) in enumerate(starts):
        if tid == task_id:
            following = starts[position + 1][1] if position + 1 < len(starts) else (None, None)
            return (out, following[0]), (err, following[1])
    return None


def part_frame(task_id: int, when: float, first: int, count: int, blob: bytes) -> bytes:
    """The PROGRESS frame carrying ``count`` finished items of a running map chunk, from its item ``first``."""
    return encode_frame(task_id, PROGRESS, when, when, PART.pack(PART_TAG, first, count) + blob)


def read_part(data: bytes, frame: Frame) -> Optional[tuple[int, int, bytes]]:
    """A part frame's ``(first, count, blob)`` (see the module docstring); None for any other frame."""
    if frame.kind != PROGRESS or frame.size < PART.size:
        return None
    tag, first, count = PART.unpack_from(data, frame.offset)
    if tag != PART_TAG:
        return None
    return first, count, data[frame.offset + PART.size:frame.offset + frame.size]


def checkpoint_frame(task_id: int, when: float) -> bytes:
    """The PROGRESS frame saying that task ``task_id`` checkpointed (``when``) and will resume from it."""
    return encode_frame(task_id, PROGRESS, when, when, CHECKPOINT_TAG)


def is_checkpoint(data: bytes, frame: Frame) -> bool:
    """Whether ``frame`` is a checkpoint frame."""
    return frame.kind == PROGRESS and data[frame.offset:frame.offset + frame.size] == CHECKPOINT_TAG


class Measure:  # a plain class: making a NamedTuple costs the node's start-up
    """One MEASURE frame, read back: see the module docstring."""

    __slots__ = ("batch_mtime", "cpu", "end", "journal_mtime", "node", "phase", "rss", "script_mtime", "start")

    def __init__(self, frame: Frame, data: bytes) -> None:
        _, self.phase, self.cpu, self.rss, self.journal_mtime, self.batch_mtime, self.script_mtime = \
            MEASURE.unpack_from(data, frame.offset)
        self.start, self.end = frame.start, frame.end
        self.node = data[frame.offset + MEASURE.size:frame.offset + frame.size].decode("utf-8", "replace")


def measure_frame(phase: int, start: float, end: float, cpu: float, rss: int, journal_mtime: float,
                  batch_mtime: float, script_mtime: float, node: str) -> bytes:
    """The MEASURE frame an element writes about itself as it starts or ends (``phase``)."""
    body = MEASURE.pack(MEASURE_TAG, phase, cpu, rss, journal_mtime, batch_mtime, script_mtime) + node.encode()
    return encode_frame(ELEMENT, PROGRESS, start, end, body)


def read_measures(data: bytes) -> list[Measure]:
    """The MEASURE frames of a journal, in order (none from a worker older than them)."""
    return [Measure(frame, data) for frame in read_frames(data)
            if frame.kind == PROGRESS and frame.task_id == ELEMENT and frame.size >= MEASURE.size
            and data[frame.offset:frame.offset + len(MEASURE_TAG)] == MEASURE_TAG]
