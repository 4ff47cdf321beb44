"""A map chunk's values for its consumer: the parts reported while the chunk ran, then the rest from its
result, in order, raising at the first item that failed, each value let go as it is yielded.

A chunk's future takes the parts its engine reports (:meth:`~clustrix_futures.future.ClusterFuture._add_part`);
its result (a :class:`~clustrix_futures.runfiles.outcomes.ChunkResult`) holds the items from ``first`` on. The
values go to the consumer through :func:`drained` iterators, which drop each value from their list as they yield
it, at C speed: once the consumer lets a value go, nothing of the map holds it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Optional

from clustrix_futures.errors import ClusterFuturesError
from clustrix_futures.future import ClusterFuture
from clustrix_futures.runfiles.outcomes import ChunkResult, RemoteTraceback
from clustrix_futures.runfiles.parts import Part

Failures = dict[int, tuple[BaseException, str]]


def drained(values: list[Any]) -> Iterator[Any]:
    """``values`` in order, each removed from the list as it is yielded (``list.pop`` from the end of the
    reversed list, called by ``map``: no Python code per item). As ProcessPoolExecutor's own
    ``_chain_from_iterable_of_lists`` (bpo-27144): a yielded value is the consumer's alone. This costs about
    15 ns per item over a plain iteration (``list.pop(values)``: ``values.pop(-1)`` parses its argument)."""
    values.reverse()
    return map(list.pop, itertools.repeat(values, len(values)))


def items_from(values: list[Any], failures: Failures, start: int) -> Iterator[Any]:
    """The chunk's items ``start`` on (``values[i]`` is item ``start + i``), up to the first that failed, which
    raises (its remote traceback as its cause); a failure past the values (a chunk whose values did not
    unpickle has none) raises after them."""
    bad = [position for position in failures if position >= start]  # also past the values: an undecodable chunk
    if not bad:
        return drained(values)
    first = min(bad)
    del values[first - start:]
    return _raising_after(values, failures[first])


def _raising_after(values: list[Any], failure: tuple[BaseException, str]) -> Iterator[Any]:
    yield from drained(values)
    exc, text = failure
    exc.__cause__ = RemoteTraceback(text)
    raise exc


def part_items(part: Part, received: int) -> Iterator[Any]:
    """A part's items from the chunk's item ``received`` on (what came before was yielded already)."""
    values, failures = part.decode()
    if received > part.first:
        del values[:received - part.first]
    return items_from(values, failures, max(received, part.first))


def final_items(chunk: ChunkResult, received: int) -> Iterator[Any]:
    """The chunk's items after the ``received`` ones its parts gave, from its result."""
    if chunk.first > received:
        raise ClusterFuturesError(f"items {received} to {chunk.first - 1} of a map chunk were reported while it "
                                  f"ran, but their report was lost")
    values = chunk.values
    if received > chunk.first:
        del values[:received - chunk.first]
    return items_from(values, chunk.failures, received)


def streamed_parts(future: ClusterFuture, deadline: Optional[float]) -> Iterator[tuple[Iterator[Any], int]]:
    """The chunk's parts as they come, until the chunk is done, as ``(items, how many)``; ``TimeoutError`` at
    ``deadline``. A part's items start where the last one's ended."""
    received = 0
    while True:
        part = future._next_part(deadline)
        if part is None:
            return
        items = part_items(part, received)
        count = part.first + part.count - received
        received = part.first + part.count
        yield items, count


def finished_pieces(future: ClusterFuture, chunk: ChunkResult, received: int) -> Iterator[Iterator[Any]]:
    """A finished chunk's items after the ``received`` ones, piece by piece (so the map's one chain iterates
    each directly): those of its parts still in its future (every part of a chunk whose map did not stream),
    then those of its result ``chunk``."""
    while future._parts:
        part = future._parts.popleft()
        yield part_items(part, received)
        received = max(received, part.first + part.count)
    yield final_items(chunk, received)
