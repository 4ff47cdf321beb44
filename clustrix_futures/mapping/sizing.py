"""Every chunk-size rule, for both engines: how many items a map chunk holds, and how many tasks an array
element packs.

* :func:`map_sizes` reads ``map``'s ``chunksize``: an integer is used as is, ``None`` or ``"auto"`` asks the
  engine (its ``chunk_sizes(total, fn)``), which calls one of the two rules below.
* :func:`local_sizes`: the local pool's chunks, balancing load over its workers (known length) or growing
  geometrically (unknown length).
* :func:`scheduler_sizes` and :class:`AdaptiveSizes`: a scheduler's chunks, sized so an array element runs about
  ``element_seconds``, from item durations learned per function (:class:`FunctionRates`).
* :func:`tasks_per_element`: how many tasks submitted one by one an array element packs, and
  :func:`burst_per_element` the same for a *cold* burst (no duration measured yet), under a time budget.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Optional, Union

from clustrix_futures.mapping.chunks import total_of

MIN_MAP_CHUNKS = 16  # without max_workers, a scheduler's map keeps at least this many elements in parallel
MAX_TASKS_PER_ELEMENT = 10_000
LOCAL_CHUNKS_PER_WORKER = 16  # a known-length local map is split into this many chunks per worker
LARGEST_LOCAL_CHUNK = 50_000
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


class FunctionRates:
    """The item rates an engine has measured, one per function (however often the function object is re-created:
    the key is its code), shared by that engine's maps. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[Any, ItemRate] = {}

    def of(self, fn: Callable[..., Any]) -> ItemRate:
        key = getattr(fn, "__code__", None) or id(fn)
        with self._lock:
            return self._rates.setdefault(key, ItemRate())


def scheduler_sizes(total: Optional[int], rate: ItemRate, element_seconds: float,
                    max_workers: Optional[int]) -> AdaptiveSizes:
    """A scheduler's map chunks: each array element runs about ``element_seconds`` once ``rate`` is known, and
    at least ``max_workers`` (else ``MIN_MAP_CHUNKS``) elements run in parallel (see :class:`AdaptiveSizes`)."""
    return AdaptiveSizes(total, element_seconds, max_workers or MIN_MAP_CHUNKS, rate)


def local_sizes(total: Optional[int], workers: int) -> Iterator[int]:
    """The local pool's map chunks: small enough to balance load (``LOCAL_CHUNKS_PER_WORKER`` per worker) and
    large enough to amortise a round trip.

    With no length known, sizes grow geometrically from 1, so a slow function still gets parallelism from the
    first items and a fast one soon travels in large chunks.
    """
    if total is not None:
        return itertools.repeat(max(1, min(total // (LOCAL_CHUNKS_PER_WORKER * workers), LARGEST_LOCAL_CHUNK)))
    return itertools.chain((2 ** k for k in range(16)), itertools.repeat(LARGEST_LOCAL_CHUNK))


def map_sizes(chunksize: Union[int, str, None], fn: Callable[..., Any], iterables: Sequence[Iterable[Any]],
              automatic: Callable[[Optional[int], Callable[..., Any]], Iterator[int]]) -> Iterator[int]:
    """The chunk sizes of ``map(fn, *iterables, chunksize=chunksize)``.

    A positive integer is repeated; ``None`` or ``"auto"`` gives the engine's ``automatic(total, fn)``, where
    ``total`` is the input's length when it is known without reading it (iterables that all have a ``len``:
    the shortest's, as ``zip`` stops there). Anything else raises ``ValueError``.
    """
    if chunksize is None or chunksize == "auto":
        return automatic(total_of(iterables), fn)
    if isinstance(chunksize, int) and not isinstance(chunksize, bool) and chunksize >= 1:
        return itertools.repeat(chunksize)
    raise ValueError(f"chunksize must be a positive integer or 'auto', not {chunksize!r}")


def tasks_per_element(setting: Any, seconds_per_task: Optional[float], element_seconds: float) -> int:
    """Tasks packed into one array element. An integer setting is used as is; "auto" packs tasks so an element
    runs about ``element_seconds``, once task durations have been measured (one task per element until then),
    and never more than ``MAX_TASKS_PER_ELEMENT``."""
    if setting != "auto":
        return int(setting)
    if seconds_per_task is None:
        return 1
    return max(1, min(MAX_TASKS_PER_ELEMENT, math.floor(element_seconds / max(seconds_per_task, 1e-6))))


def burst_per_element(tasks: int, min_elements: int) -> int:
    """Tasks packed into one array element of a cold burst: ``tasks`` submitted together before any task
    duration is known, spread over ``min_elements`` elements (``max_workers``, else ``MIN_MAP_CHUNKS``), as a
    cold map spreads its guessed chunks, and never more than ``MAX_TASKS_PER_ELEMENT``.

    Like a guessed map chunk, such an element runs under a time budget of ``element_seconds``: what it has not
    started by then is taken back and submitted again at once, one task per element
    (:mod:`clustrix_futures.engine.bursts`), so a burst of long tasks costs at most one budget more than one
    task per element would, and a burst of short ones costs a handful of elements instead of one per task."""
    return max(1, min(MAX_TASKS_PER_ELEMENT, -(-tasks // max(1, min_elements))))
