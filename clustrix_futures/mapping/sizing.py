"""Every chunk-size rule: how many items a map chunk (an array element, or a local task) holds."""

from __future__ import annotations

from typing import Optional

MIN_CHUNK_SHARE = 0.2  # of the target element duration: the shortest chunk the parallelism rule makes
# A chunk's values are held whole, by its worker and, decoded, by the consumer: about 40 MB for 10**6 ints.
MAX_CHUNK_ITEMS = 10**6


class AdaptiveSizes:
    """Chunk sizes for scheduler arrays, learned from measured item durations.

    Until a duration is known (``learned``), sizes are guesses, and every guessed chunk must run under a time
    budget of ``target_seconds`` (``guessed`` tells whether the size just handed out was one; the map passes
    the budget to the worker, which stops the chunk there and reports how far it got, see
    :func:`clustrix_futures.node.calls.apply_chunk`). With a known ``total`` of at most ``min_chunks`` times
    ``MAX_CHUNK_ITEMS`` (``guesses_cover``), the guesses are ``min_chunks`` equal chunks covering the whole
    input: the largest size the parallelism rule below allows, so the whole input goes out at once, in one
    array, and the budget keeps an element of a slow function from running far past ``target_seconds``;
    what a budget cut off is sized again from the rate then measured (``learned_size``). With an unknown or
    a larger total, the first guess is a one-item probe, and the map waits for it.

    Once :meth:`observe` has seen items run, each chunk is sized to run about ``target_seconds``, but never so
    large that fewer than ``min_chunks`` chunks remain for the items left when the duration was learned
    (parallelism), unless that would make chunks shorter than ``MIN_CHUNK_SHARE`` of the target: an element
    costs its own start (the scheduler's dispatch, the interpreter, imports: about 0.1 s of CPU on the test
    cluster, seconds on a busy cluster with a network filesystem), so splitting less work than that across
    more elements makes the map slower, not faster. No chunk exceeds ``MAX_CHUNK_ITEMS`` (memory). ``rate`` is
    shared between maps of the same function, so a repeated map skips the guesses.
    """

    PROBE = 1  # items in the probe chunk of an input of unknown length

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

    @property
    def guesses_cover(self) -> bool:
        """Whether ``min_chunks`` guessed chunks cover the input (its total is known and small enough)."""
        return self._covering_size() is not None

    def _covering_size(self) -> Optional[int]:
        """The size of ``min_chunks`` equal chunks covering the input; None if its total is unknown, or if that
        size would exceed ``MAX_CHUNK_ITEMS``."""
        if self.total is None:
            return None
        size = max(1, -(-self.total // self.min_chunks))
        return size if size <= MAX_CHUNK_ITEMS else None

    def observe(self, items: int, seconds: float) -> None:
        self.rate.add(items, seconds)

    def _items_in(self, seconds: float) -> int:
        """Items that run about ``seconds`` at the rate measured so far (at least one)."""
        return max(1, int(seconds / max(self.rate.seconds_per_item or 0.0, 1e-9)))

    def learned_size(self) -> int:
        """Items that run about ``target_seconds`` at the rate measured so far (within the cap, once set)."""
        size = min(MAX_CHUNK_ITEMS, self._items_in(self.target))
        return size if self._cap is None else min(size, self._cap)

    def __iter__(self) -> AdaptiveSizes:
        return self

    def __next__(self) -> int:
        self.guessed = not self.learned
        if self.guessed:
            size = self._covering_size() or self.PROBE
        else:
            if self._cap is None:
                left = None if self.total is None else self.total - self.handed_out
                if left:
                    self._cap = max(-(-left // self.min_chunks), self._items_in(MIN_CHUNK_SHARE * self.target))
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
