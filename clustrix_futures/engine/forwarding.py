"""``forward_output=True`` on a cluster: what tasks print reaches the client's stdout and stderr.

A :class:`Forwarder` runs beside the job monitor on the engine's loop, told of every element the monitor
watches (``Books.on_watch``). Every ``FORWARD_INTERVAL`` it tails the logs of the elements the monitor sees
running, and once more those of elements that left its books (so the end of a short element's output, or of
one never seen running, is not lost): at most one bounded
read (``FORWARD_BYTES``, from where the last read ended) per log of such an element per pass, whatever the
run's size. Complete lines are written to this process's ``sys.stdout`` / ``sys.stderr``; a partial line waits
for its end (or for its element's end). When the run has more than one task, each line is prefixed with the
id of the task that printed it, ``[task 7] ...``: for an element of several tasks that takes one more read per
pass, of its journal, whose output frames tell where each task's output starts
(:func:`clustrix_futures.runfiles.journal.output_spans`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Optional, TextIO

from clustrix_futures.engine.records import Books, Element
from clustrix_futures.remote.storage import Storage
from clustrix_futures.remote.transport import Transport
from clustrix_futures.runfiles.journal import OUTPUT, PROGRESS, read_frames
from clustrix_futures.runfiles.layout import RunDir
from clustrix_futures.schedulers.base import RUNNING

log = logging.getLogger(__name__)

FORWARD_INTERVAL = 0.5  # seconds between two passes
FORWARD_BYTES = 256 * 1024  # read at most this much of one log per pass
STREAMS = ("out", "err")


@dataclass
class _Tail:
    """One element's two logs: how far they were read, and the partial last line of each."""

    element: Element
    offsets: list[int] = field(default_factory=lambda: [0, 0])
    pending: list[bytes] = field(default_factory=lambda: [b"", b""])


class Forwarder:
    """Tails the logs of the monitor's elements (``books``) and writes their lines here; see the module."""

    def __init__(self, transport: Transport, storage: Storage, run_dir: RunDir, books: Books) -> None:
        self.transport, self.storage, self.run_dir, self.books = transport, storage, run_dir, books
        self._tails: dict[tuple[int, int], _Tail] = {}
        self._tasks_seen = 0
        books.on_watch = self._watch  # every element, also one that ends before a pass sees it live

    def _watch(self, element: Element) -> None:
        slot = (element.batch, element.index)
        if slot in self._tails:
            self._tails[slot].element = element  # run again: same logs, appended to
        else:
            self._tails[slot] = _Tail(element)
        self.reads = 0  # log and journal reads, for tests

    async def run(self, stopped: asyncio.Event) -> None:
        """Pass every ``FORWARD_INTERVAL`` until ``stopped``; then a last pass over every element known."""
        while not stopped.is_set():
            try:
                await self.forward()
            except Exception:
                log.exception("forwarding the tasks' output failed; trying again")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopped.wait(), FORWARD_INTERVAL)
        await self.forward(final=True)

    async def forward(self, final: bool = False) -> None:
        """One pass: the running elements, and (their last read) those gone from the books."""
        live = {(e.batch, e.index) for e in self.books.live.values()}
        self._tasks_seen = max(self._tasks_seen, len(self.books.tasks))
        for slot, tail in list(self._tails.items()):
            gone = final or slot not in live
            if gone or tail.element.phase == RUNNING:
                await self._read(slot, tail, done=gone)
            if gone:
                del self._tails[slot]

    async def _read(self, slot: tuple[int, int], tail: _Tail, done: bool) -> None:
        batch, index = slot
        starts = await self._task_starts(slot, tail.element) if self._prefixed(tail.element) else None
        for number, stream in enumerate(STREAMS):
            data = await self._chunk(self.run_dir.log(batch, str(index), stream), tail, number)
            while done and len(data) == FORWARD_BYTES:  # the element is over: its whole output goes out
                data += await self._chunk(self.run_dir.log(batch, str(index), stream), tail, number)
            text, line_start = tail.pending[number] + data, tail.offsets[number] - len(data) - len(tail.pending[number])
            cut = len(text) if done else text.rfind(b"\n") + 1
            tail.pending[number] = text[cut:]
            if cut:
                self._write(sys.stdout if number == 0 else sys.stderr, text[:cut], line_start,
                            None if starts is None else starts[number], tail.element)

    async def _chunk(self, path: str, tail: _Tail, number: int) -> bytes:
        """The next bytes of one log (at most ``FORWARD_BYTES``), its offset moved past them."""
        start = tail.offsets[number]
        data = await self.transport.read_span(path, start, start + FORWARD_BYTES, FORWARD_BYTES) or b""
        self.reads += 1
        tail.offsets[number] = start + len(data)
        return data

    def _prefixed(self, element: Element) -> bool:
        return self._tasks_seen > 1 or len(element.task_ids) > 1

    async def _task_starts(self, slot: tuple[int, int], element: Element) -> list[list[tuple[int, int]]]:
        """For each stream, ``(offset, task id)`` where each task's output starts, in order."""
        if len(element.task_ids) == 1:
            return [[(0, element.task_ids[0])], [(0, element.task_ids[0])]]
        result, partial = self.run_dir.result(*slot), self.run_dir.partial(*slot)
        journals = await self.storage.read_many([result, partial])
        self.reads += 1
        data = journals[result] or journals[partial] or b""
        starts: list[list[tuple[int, int]]] = [[], []]
        for frame in read_frames(data):
            if frame.kind == PROGRESS and frame.size == OUTPUT.size:
                out, err = OUTPUT.unpack_from(data, frame.offset)
                starts[0].append((out, frame.task_id))
                starts[1].append((err, frame.task_id))
        return starts

    def _write(self, target: TextIO, data: bytes, offset: int, starts: Optional[list[tuple[int, int]]],
               element: Element) -> None:
        lines = []
        pieces = data.split(b"\n")
        if not pieces[-1]:
            pieces.pop()
        for raw in pieces:
            line = raw.decode(errors="replace")
            if starts is not None:
                at = bisect.bisect_right([position for position, _ in starts], offset) - 1
                task = starts[at][1] if at >= 0 else element.task_ids[0]
                line = f"[task {task}] {line}"
            lines.append(line + "\n")
            offset += len(raw) + 1
        target.write("".join(lines))
        target.flush()
