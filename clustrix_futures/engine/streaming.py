"""Reading the journals of running array elements as they grow, for the map chunks someone consumes item by item.

A running map chunk reports its finished items in part frames of its element's journal
(:mod:`clustrix_futures.runfiles.journal`). In each monitor cycle, for the live elements that have started (the
scheduler shows them running, or the cycle's listing shows their journal, ``B-I.part``, or its pieces) and hold
a chunk whose future streams (:meth:`~clustrix_futures.future.ClusterFuture._streams`: a
``map`` with the default chunksize, still consumed, the chunk not done), :class:`RunningJournals` reads only
the bytes appended since the last read:

* on a filesystem (this machine's, or the cluster's over SFTP): one offset read of ``results/B-I.part`` per such
  element (:meth:`~clustrix_futures.remote.transport.Transport.read_span`), all at once;
* on S3: the element's numbered pieces ``results/B-I.N.seg`` (written by :mod:`clustrix_futures.node.s3` at
  most every few seconds) that the cycle's one results listing shows and that were not read yet, in order.

What they hold goes through the element's :class:`~clustrix_futures.runfiles.parts.JournalCursor`
(:meth:`~clustrix_futures.engine.records.Books.apply_appended`): parts to the chunks' futures, outcomes that
finished meanwhile resolve their futures. No scheduler query and no listing is added to the cycle. An element
run again is not read so (its new journal starts over, and on S3 its old pieces may still be there): its
result comes whole when it ends.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from clustrix_futures.engine.records import Books, Element
from clustrix_futures.runfiles.layout import PARTIAL_SUFFIX, SEGMENT_SUFFIX, RunDir, is_s3, parse_segment_name
from clustrix_futures.schedulers.base import RUNNING

WHOLE = 1 << 62  # a span limit larger than any journal: read every byte from the offset on


class RunningJournals:
    """The running elements' journals of one run, read as they grow (see the module docstring)."""

    def __init__(self, storage: Any, run_dir: RunDir, books: Books) -> None:
        self.storage = storage
        self.run_dir = run_dir
        self.books = books
        self._s3 = is_s3(run_dir.root)

    def wanted(self, listing: list[str]) -> list[Element]:
        """The live elements that have started (as of the status report, or of ``listing``, this cycle's listing
        of ``results/``) holding a chunk someone takes item by item."""
        tasks = self.books.tasks
        started = {name.split(".", 1)[0] for name in listing if name.endswith((PARTIAL_SUFFIX, SEGMENT_SUFFIX))}
        return [element for element in self.books.live.values()
                if (element.phase == RUNNING or f"{element.batch}-{element.index}" in started)
                and element.attempts == 1
                and any(tid in tasks and tasks[tid].future._streams() for tid in element.task_ids)]

    async def read(self, listing: list[str]) -> bool:
        """Read what the wanted elements appended; whether anything was found."""
        elements = self.wanted(listing)
        if not elements:
            return False
        if self._s3:
            return await self._read_pieces(elements, listing)
        spans = await asyncio.gather(*(self._span(element) for element in elements))
        found = False
        for element, data in zip(elements, spans):
            if data and not element.done:
                found = True
                self.books.apply_appended(element, data, self.run_dir.partial(element.batch, element.index))
        return found

    async def _span(self, element: Element) -> Optional[bytes]:
        offset = self.books.cursor(element).offset
        data: Optional[bytes] = await self.storage.read_span(
            self.run_dir.partial(element.batch, element.index), offset, None, WHOLE)
        return data

    async def _read_pieces(self, elements: list[Element], listing: list[str]) -> bool:
        by_slot = {(element.batch, element.index): element for element in elements}
        listed: dict[tuple[int, int], set[int]] = {}
        for name in listing:
            parsed = parse_segment_name(name)
            if parsed is not None and parsed[:2] in by_slot:
                listed.setdefault(parsed[:2], set()).add(parsed[2])
        paths: list[tuple[Element, str]] = []
        for slot, numbers in listed.items():
            number = by_slot[slot].pieces
            while number in numbers:  # in order, without a gap
                paths.append((by_slot[slot], self.run_dir.segment(*slot, number)))
                number += 1
        if not paths:
            return False
        contents = await self.storage.read_many([path for _, path in paths])
        gone: set[int] = set()
        for element, path in paths:
            data = contents.get(path)
            if data is None or element.done or id(element) in gone:
                gone.add(id(element))  # deleted meanwhile: the element finished, its result comes whole
                continue
            element.pieces += 1
            self.books.apply_appended(element, data, path)
        return True
