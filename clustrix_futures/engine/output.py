"""What tasks print on a cluster: one task's part of its element's logs (``future.stdout()``/``stderr()``).

The worker writes, before each task, a journal frame with the sizes of its element's stdout and stderr logs
(:func:`clustrix_futures.runfiles.journal.output_spans`): a task's output is what the logs gained from there
to the next task's frame. Reading it costs one read of the element's journal (the result file, or the partial
one while the element runs) and one bounded read of the log (:meth:`Transport.read_span`), never the whole log.
"""

from __future__ import annotations

from typing import Any, Optional

from clustrix_futures.remote.storage import Storage
from clustrix_futures.remote.transport import Transport
from clustrix_futures.runfiles.journal import output_spans
from clustrix_futures.runfiles.layout import RunDir

STREAMS = ("out", "err")


async def task_output(storage: Storage, transport: Transport, run_dir: RunDir, future: Any, stream: str,
                      limit: int) -> str:
    """The end (at most ``limit`` bytes) of what the task of ``future`` printed to ``stream`` ("out" or
    "err"), decoded as UTF-8 with replacement; "" before its element is submitted or the task starts."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, not {stream!r}")
    slot: Optional[tuple[int, int]] = future._slot
    if slot is None:
        return ""
    batch, index = slot
    result, partial = run_dir.result(batch, index), run_dir.partial(batch, index)
    journals = await storage.read_many([result, partial])
    spans = output_spans(journals[result] or journals[partial] or b"", future.task_id)
    if spans is None:
        return ""
    start, end = spans[STREAMS.index(stream)]
    data = await transport.read_span(run_dir.log(batch, str(index), stream), start, end, limit)
    return (data or b"").decode(errors="replace")
