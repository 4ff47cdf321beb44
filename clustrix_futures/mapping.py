"""``Executor.map`` over chunks, with the stdlib's contract and per-item failure semantics.

Items travel in chunks (one task per chunk), but results come back per item: every item before a failing
one is yielded, then that item's exception is raised. ``timeout`` counts from the ``map`` call. Without
``buffersize`` every chunk is submitted when ``map`` is called, as the stdlib does; with it, at most
``buffersize`` input items are read ahead of the consumer. Closing the iterator cancels chunks not started.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, Optional

from clustrix_futures.chunking import split
from clustrix_futures.future import ClusterFuture
from clustrix_futures.serialization import dumps_task, unpack_items
from clustrix_futures.worker import apply_chunk

SubmitPayload = Callable[[bytes], ClusterFuture]


def map_in_chunks(
    submit: SubmitPayload,
    fn: Callable[..., Any],
    iterables: Sequence[Iterable[Any]],
    sizes: Iterator[int],
    timeout: Optional[float],
    buffersize: Optional[int],
    ship_code: bool = False,
) -> Iterator[Any]:
    if buffersize is not None and (isinstance(buffersize, bool) or not isinstance(buffersize, int)
                                   or buffersize < 1):
        raise ValueError("buffersize must be None or an integer greater than 0")
    deadline = None if timeout is None else time.monotonic() + timeout
    star = len(iterables) != 1
    source = iterables[0] if not star else zip(*iterables)
    dumps_task(fn, (), {}, ship_code)  # an unpicklable function fails here, in map(), not in the iterator
    room = [buffersize or 0]

    def bounded(sizes: Iterator[int]) -> Iterator[int]:
        for size in sizes:
            yield min(size, room[0]) if buffersize else size

    parts = split(source, bounded(sizes))
    pending: deque[tuple[ClusterFuture, int]] = deque()

    def submit_part(part: Any) -> None:
        pending.append((submit(dumps_task(apply_chunk, (fn, part, star), {}, ship_code)), len(part)))

    def fill() -> None:
        while room[0] > 0:
            part = next(parts, None)
            if part is None:
                return
            room[0] -= len(part)
            submit_part(part)

    if buffersize:
        fill()
    else:
        for part in parts:
            submit_part(part)

    def results() -> Iterator[Any]:
        try:
            while pending:
                future, count = pending[0]
                outcomes = future.result(None if deadline is None else deadline - time.monotonic())
                pending.popleft()
                yield from unpack_items(outcomes)
                if buffersize:
                    room[0] += count
                    fill()
        finally:
            for future, _ in pending:
                future.cancel()

    return results()
