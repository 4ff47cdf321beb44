"""Split work into chunks without materialising it.

:func:`chunks` is public: ``for part in chunks(range(10**9), 10**6)`` yields ``range`` objects, so a user can
map a function over sub-ranges directly. ``ClusterPoolExecutor.map`` uses the same splitting for local pools
and scheduler arrays alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional, Union

Chunk = Union[range, Sequence[Any]]


def chunks(iterable: Iterable[Any], size: int) -> Iterator[Chunk]:
    """Yield consecutive chunks of at most ``size`` items.

    A ``range`` is split arithmetically into sub-ranges (O(1) memory each), a sequence (list, tuple...) by
    slicing, and any other iterable lazily: no item is read before its chunk is requested.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"chunk size must be a positive integer, not {size!r}")
    return split(iterable, itertools.repeat(size))


def split(iterable: Iterable[Any], sizes: Iterable[int]) -> Iterator[Chunk]:
    """Like :func:`chunks`, with the size of each successive chunk taken from ``sizes``."""
    if isinstance(iterable, range):
        yield from _split_range(iterable, sizes)
    elif isinstance(iterable, Sequence) and not isinstance(iterable, (str, bytes)):
        start = 0
        for size in sizes:
            if start >= len(iterable):
                return
            yield iterable[start:start + size]
            start += size
    else:
        iterator = iter(iterable)
        for size in sizes:
            part = list(itertools.islice(iterator, size))
            if not part:
                return
            yield part


def _split_range(whole: range, sizes: Iterable[int]) -> Iterator[range]:
    position = 0
    for size in sizes:
        if position >= len(whole):
            return
        yield whole[position:position + size]
        position += size


def length_of(iterable: Iterable[Any]) -> Optional[int]:
    """The number of items, when it is known without reading them."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


class AdaptiveSizes:
    """Chunk sizes for scheduler arrays, learned from measured item durations.

    Until a duration is known, it yields one small probe chunk (``probe``). Once :meth:`observe` has seen
    items run, each chunk is sized to run about ``target_seconds``, but never so large that fewer than
    ``min_chunks`` chunks remain for the items left when the duration was learned (parallelism).
    ``rate`` is shared between maps of the same function, so a repeated map skips the probe.
    """

    def __init__(self, total: Optional[int], target_seconds: float, min_chunks: int, rate: ItemRate) -> None:
        self.total = total
        self.target = target_seconds
        self.min_chunks = min_chunks
        self.rate = rate
        self.handed_out = 0
        self._cap: Optional[int] = None

    @property
    def learned(self) -> bool:
        return self.rate.seconds_per_item is not None

    def probe(self) -> int:
        return max(1, min(self.total // 1000, 1000)) if self.total else 1

    def observe(self, items: int, seconds: float) -> None:
        self.rate.add(items, seconds)

    def __iter__(self) -> AdaptiveSizes:
        return self

    def __next__(self) -> int:
        per_item = self.rate.seconds_per_item
        if per_item is None:
            size = self.probe()
        else:
            if self._cap is None:
                left = None if self.total is None else self.total - self.handed_out
                self._cap = max(1, -(-left // self.min_chunks)) if left else None
            size = max(1, int(self.target / max(per_item, 1e-9)))
            if self._cap is not None:
                size = min(size, self._cap)
        self.handed_out += size
        return size


class ItemRate:
    """Running mean of seconds per item (weighted by items)."""

    def __init__(self) -> None:
        self.items = 0
        self.seconds = 0.0

    def add(self, items: int, seconds: float) -> None:
        if items > 0:
            self.items += items
            self.seconds += seconds

    @property
    def seconds_per_item(self) -> Optional[float]:
        return self.seconds / self.items if self.items else None
