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

    Args:
        iterable: The items. A ``str`` or ``bytes`` is treated as an iterable of its characters (lists).
        size: The most items per chunk, a positive integer; only the last chunk may be shorter.

    Returns:
        An iterator of ``range`` (for a range), slices of the sequence's type (for a sequence), or lists.

    Raises:
        ValueError: ``size`` is not a positive integer (raised at once, not at the first ``next()``).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"chunk size must be a positive integer, not {size!r}")
    return split(iterable, itertools.repeat(size))


def split(iterable: Iterable[Any], sizes: Iterable[int]) -> Iterator[Chunk]:
    """Like :func:`chunks`, with the size of each successive chunk taken from ``sizes``."""
    if isinstance(iterable, Sequence) and not isinstance(iterable, (str, bytes)):  # a range slices into ranges
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


def length_of(iterable: Iterable[Any]) -> Optional[int]:
    """The number of items, when it is known without reading them."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def total_of(iterables: Sequence[Iterable[Any]]) -> Optional[int]:
    """The number of items ``map`` takes from ``iterables`` (zipped: the shortest's), when every length is known
    without reading them."""
    lengths = [length_of(iterable) for iterable in iterables]
    return None if None in lengths else min(lengths)  # type: ignore[type-var]
