"""Progress bars (tqdm, the ``progress`` extra): done, running, queued and failed at a glance.

``for future in progress(futures): ...`` yields futures as they complete, like ``as_completed``;
``ex.map(fn, items, progress=True)`` shows a bar over the items as they are yielded (streamed items too), its
postfix counting items (a chunk's state counts for each of its items), and it ends with the true counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, as_completed
from typing import Any, Optional

REFRESH_SECONDS = 0.5  # counting states is O(n): recount at most this often


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress bars need tqdm: pip install 'clustrix-futures[progress]'") from None
    return tqdm


Entries = Callable[[], Iterable[tuple[Any, int]]]  # the (future, items) to count; anything else counts nothing


def counts(futures: Iterable[Future]) -> dict[str, int]:
    """How many futures are done (succeeded), running, queued and failed (raised or cancelled)."""
    return item_counts((future, 1) for future in futures)


def item_counts(entries: Iterable[tuple[Any, int]]) -> dict[str, int]:
    """How many items are done (succeeded), running, queued and failed (raised or cancelled), each of an
    entry ``(future, items)`` in the state of its future (entries that are not futures are not counted)."""
    tally = {"done": 0, "running": 0, "queued": 0, "failed": 0}
    for future, items in entries:
        if not isinstance(future, Future):
            continue
        if future.done():
            tally["failed" if future.cancelled() or future.exception() is not None else "done"] += items
        else:
            tally["running" if future.running() else "queued"] += items
    return tally


class Bar:
    """A tqdm bar whose postfix shows the items running, queued and failed, recounted at most every 0.5 s."""

    def __init__(self, total: Optional[int], unit: str, desc: Optional[str]) -> None:
        self._bar = _tqdm()(total=total, unit=unit, desc=desc)
        self._counted = 0.0

    def advance(self, steps: int, entries: Entries, force: bool = False) -> None:
        """Count ``steps`` more done; recount the states of the ``entries()`` not yet yielded if due (or
        ``force``): ``entries`` is called only then."""
        self._bar.update(steps)
        if force or time.monotonic() - self._counted >= REFRESH_SECONDS:
            tally = item_counts(entries())
            self._bar.set_postfix(running=tally["running"], queued=tally["queued"], failed=tally["failed"],
                                  refresh=False)
            self._counted = time.monotonic()

    def close(self, entries: Optional[Entries] = None) -> None:
        """Show the true counts of what is left (``entries()``; none: nothing) and close."""
        self.advance(0, entries or tuple, force=True)
        self._bar.close()


def progress(futures: Iterable[Future], desc: Optional[str] = None) -> Iterator[Future]:
    """Yield ``futures`` as they complete while a bar shows done, running, queued and failed.

    Like ``concurrent.futures.as_completed(futures)``, with no timeout: every future is yielded once, in the
    order they finish. The bar counts done (succeeded) and shows running, queued and failed (raised or
    cancelled); it closes when the iterator ends or is closed.

    Args:
        futures: The futures to wait for (all read when iteration starts).
        desc: The bar's label.

    Raises:
        ImportError: tqdm is not installed (``pip install 'clustrix-futures[progress]'``), raised at the first
            ``next()``.
    """
    pending = list(futures)
    bar = Bar(len(pending), "task", desc)
    try:
        def left() -> Iterator[tuple[Future, int]]:
            return ((future, 1) for future in pending)

        for future in as_completed(pending):
            bar.advance(1, left)
            yield future
    finally:
        bar.close(left)
