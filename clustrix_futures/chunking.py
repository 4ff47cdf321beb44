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

    Until a duration is known (``learned``), sizes are guesses, and every guessed chunk must run under a time
    budget of ``target_seconds`` (``guessed`` tells whether the size just handed out was one; the map passes
    the budget to the worker, which stops the chunk there and reports how far it got, see
    :func:`clustrix_futures.worker.apply_chunk`). The first guess is one small probe chunk (``probe``). With
    a known ``total``, the next guesses are ``min_chunks - 1`` chunks of ``ceil((total - probe) /
    (min_chunks - 1))`` items, the probe making the ``min_chunks``-th: about the largest size the parallelism
    rule below would ever allow, so the whole input can go out at once, in one array of ``min_chunks``
    elements, without waiting for the probe; the budget keeps an element of a slow function from running far
    past ``target_seconds``, and what a budget cut off is sized again from the rate then measured
    (``learned_size``). With an unknown total, every guess is probe-sized (the map waits for the probe).

    Once :meth:`observe` has seen items run, each chunk is sized to run about ``target_seconds``, but never so
    large that fewer than ``min_chunks`` chunks remain for the items left when the duration was learned
    (parallelism). ``rate`` is shared between maps of the same function, so a repeated map skips the probe
    and the guesses.
    """

    def __init__(self, total: Optional[int], target_seconds: float, min_chunks: int, rate: ItemRate) -> None:
        self.total = total
        self.target = target_seconds
        self.min_chunks = min_chunks
        self.rate = rate
        self.handed_out = 0
        self.guessed = False
        self._cap: Optional[int] = None

    @property
    def learned(self) -> bool:
        return self.rate.seconds_per_item is not None

    def probe(self) -> int:
        return max(1, min(self.total // 1000, 1000)) if self.total else 1

    def observe(self, items: int, seconds: float) -> None:
        self.rate.add(items, seconds)

    def learned_size(self) -> int:
        """Items that run about ``target_seconds`` at the rate measured so far (within the cap, once set)."""
        per_item = self.rate.seconds_per_item
        size = max(1, int(self.target / max(per_item or 0.0, 1e-9)))
        return size if self._cap is None else min(size, self._cap)

    def __iter__(self) -> AdaptiveSizes:
        return self

    def __next__(self) -> int:
        self.guessed = not self.learned
        if self.guessed:
            if self.handed_out == 0 or self.total is None:
                size = self.probe()
            else:
                size = max(1, -(-(self.total - self.probe()) // max(1, self.min_chunks - 1)))
        else:
            if self._cap is None:
                left = None if self.total is None else self.total - self.handed_out
                self._cap = max(1, -(-left // self.min_chunks)) if left else None
            size = self.learned_size()
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
