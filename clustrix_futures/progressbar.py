"""Progress bars (tqdm, the ``progress`` extra): done, running, queued and failed at a glance.

``for future in progress(futures): ...`` yields futures as they complete, like ``as_completed``;
``ex.map(fn, items, progress=True)`` shows a bar over the items as they are yielded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, as_completed
from typing import Any, Optional

REFRESH_SECONDS = 0.5  # counting states is O(n): recount at most this often


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress bars need tqdm: pip install 'clustrix-futures[progress]'") from None
    return tqdm


def counts(futures: Iterable[Future]) -> dict[str, int]:
    """How many futures are done (succeeded), running, queued and failed (raised or cancelled)."""
    tally = {"done": 0, "running": 0, "queued": 0, "failed": 0}
    for future in futures:
        if future.done():
            tally["failed" if future.cancelled() or future.exception() is not None else "done"] += 1
        else:
            tally["running" if future.running() else "queued"] += 1
    return tally


class Bar:
    """A tqdm bar whose postfix shows running, queued and failed, recounted at most every 0.5 s."""

    def __init__(self, total: Optional[int], unit: str, desc: Optional[str]) -> None:
        self._bar = _tqdm()(total=total, unit=unit, desc=desc)
        self._counted = 0.0

    def advance(self, steps: int, futures: Sequence[Future], force: bool = False) -> None:
        """Count ``steps`` more done; recount the states of ``futures`` if due (or ``force``)."""
        self._bar.update(steps)
        if force or time.monotonic() - self._counted >= REFRESH_SECONDS:
            tally = counts(futures)
            self._bar.set_postfix(running=tally["running"], queued=tally["queued"], failed=tally["failed"],
                                  refresh=False)
            self._counted = time.monotonic()

    def close(self) -> None:
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
        for future in as_completed(pending):
            bar.advance(1, pending)
            yield future
        bar.advance(0, pending, force=True)
    finally:
        bar.close()
