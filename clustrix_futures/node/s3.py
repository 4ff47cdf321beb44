"""The node's side of a run whose storage is S3: one array element, from ``batches/B.pkl`` to ``results/B-I.res``.

The element reads its slice of the batch object with ranged GETs, runs its tasks, and PUTs its journal
(:mod:`clustrix_futures.runfiles.journal`) as ``results/B-I.res`` once, at the end. Crash recovery uses a
checkpoint object ``results/B-I.part`` holding the journal so far: it is written after the element's first
task (when more follow), then again after a task once the time since the last checkpoint is at least
:data:`CHECKPOINT_FACTOR` times what that checkpoint took, so checkpoints cost at most about
1/CHECKPOINT_FACTOR of the element's run time. If the element dies, the tasks in the last checkpoint keep
their results; the rest fail with the element. The checkpoint is deleted after the result is written. Skip
markers (``skip/TASK``) are listed once when the element starts and again with each checkpoint.

For the client to stream a running element's results (a map chunk's parts, see
:mod:`clustrix_futures.runfiles.journal`), the journal also goes out in numbered pieces ``results/B-I.N.seg``
(:class:`_Segments`): what was added since the last piece, once at least :data:`SEGMENT_SECONDS` have passed
since the element started or since the last piece, at most one PUT per ``SEGMENT_SECONDS`` (looked at after
each task; a part of a running chunk that comes sooner is put when they have passed, by a timer). An element
that ends sooner writes none. They are deleted with one request per thousand once the result is written.

boto3 is imported only here, only when an S3 run needs it (:func:`s3_client`, which the client's
``S3Storage`` uses too): filesystem runs need nothing beyond the standard library and cloudpickle on the node.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional

from clustrix_futures.node import calls, measure
from clustrix_futures.node.calls import journal_frame, output_frame
from clustrix_futures.node.initializer import initialized
from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.batches import element_tasks
from clustrix_futures.runfiles.layout import ENDPOINT_VARIABLE, RunDir, split_url

CHECKPOINT_FACTOR = 10.0
SEGMENT_SECONDS = 2.0


def s3_client(endpoint_url: Optional[str], connections: int = 10) -> Any:
    """A boto3 S3 client (credentials and region from boto3's chain; ``us-east-1`` if none is configured)
    keeping up to ``connections`` connections open."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url or None, region_name=session.region_name or "us-east-1",
                          config=Config(max_pool_connections=connections,
                                        retries={"mode": "standard", "max_attempts": 5}))


def run_element(root: str, batch: int, element: int) -> None:
    """One array element's tasks of the S3 run ``root`` (see the module docstring)."""
    client = s3_client(os.environ.get(ENDPOINT_VARIABLE))
    run_dir = RunDir(root)
    bucket, _ = split_url(root)
    tasks = initialized(_read_element(client, run_dir.batch_file(batch), element),
                        _optional_object(client, run_dir.initializer), f"{batch}-{element}")
    _, partial = split_url(run_dir.partial(batch, element))
    skipped = _skip_markers(client, run_dir)
    frames = [journal.preamble(), measure.start_frame(None, None, batch)]
    segments = _Segments(client, run_dir, batch, element, frames)
    checkpoint_cost: Optional[float] = None
    last_checkpoint = time.perf_counter()
    for position, (task_id, payload) in enumerate(tasks):
        if task_id in skipped:
            continue
        frames.append(output_frame(task_id))
        calls.part_sink = segments.sink(task_id)
        frames.append(journal_frame(task_id, payload))
        segments.put_if_due()
        more = position < len(tasks) - 1
        if more and (checkpoint_cost is None
                     or time.perf_counter() - last_checkpoint >= CHECKPOINT_FACTOR * checkpoint_cost):
            start = time.perf_counter()
            client.put_object(Bucket=bucket, Key=partial, Body=b"".join(frames))
            skipped |= _skip_markers(client, run_dir)
            last_checkpoint = time.perf_counter()
            checkpoint_cost = last_checkpoint - start
    frames.append(measure.end_frame())
    _, result = split_url(run_dir.result(batch, element))
    client.put_object(Bucket=bucket, Key=result, Body=b"".join(frames))
    if checkpoint_cost is not None:
        client.delete_object(Bucket=bucket, Key=partial)
    segments.delete()


class _Segments:
    """The numbered pieces of a running element's journal (see the module docstring): ``frames`` is the
    journal so far, appended to by the element's loop and by the sink of a running chunk."""

    def __init__(self, client: Any, run_dir: RunDir, batch: int, element: int, frames: list[bytes]) -> None:
        self._client, self._run_dir, self._slot = client, run_dir, (batch, element)
        self._frames = frames
        self._written = 0  # frames already in pieces
        self._count = 0
        self._last = time.monotonic()
        self._lock = threading.Lock()  # the element's loop, the chunk's reporter and the timer put pieces
        self._timer: Optional[threading.Timer] = None
        self._ended = False

    def sink(self, task_id: int) -> calls.PartSink:
        def add(first: int, count: int, blob: bytes) -> None:
            self._frames.append(journal.part_frame(task_id, time.time(), first, count, blob))
            if not self.put_if_due() and self._timer is None:
                self._timer = threading.Timer(SEGMENT_SECONDS - (time.monotonic() - self._last), self._on_timer)
                self._timer.daemon = True
                self._timer.start()

        return add

    def _on_timer(self) -> None:
        self._timer = None
        self.put_if_due()

    def put_if_due(self) -> bool:
        """Put what is new as the next piece if it is due; whether nothing is left waiting."""
        with self._lock:
            end = len(self._frames)
            if self._ended or end == self._written:
                return True
            if time.monotonic() - self._last < SEGMENT_SECONDS:
                return False
            bucket, key = split_url(self._run_dir.segment(*self._slot, self._count))
            self._client.put_object(Bucket=bucket, Key=key, Body=b"".join(self._frames[self._written:end]))
            self._written, self._count, self._last = end, self._count + 1, time.monotonic()
            return True

    def delete(self) -> None:
        with self._lock:
            self._ended = True
        bucket, _ = split_url(self._run_dir.root)
        keys = [{"Key": split_url(self._run_dir.segment(*self._slot, n))[1]} for n in range(self._count)]
        for start in range(0, len(keys), 1000):
            self._client.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + 1000], "Quiet": True})


def _read_element(client: Any, url: str, element: int) -> list[tuple[int, bytes]]:
    """An element's slice of a batch object: three ranged GETs, whatever the batch's size."""
    bucket, key = split_url(url)

    def read(start: int, size: int) -> bytes:
        answer = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + size - 1}")
        data: bytes = answer["Body"].read()
        return data

    return element_tasks(read, element)


def _optional_object(client: Any, url: str) -> Optional[bytes]:
    """The object at ``url`` (the run's initializer); None if there is none."""
    bucket, key = split_url(url)
    try:
        data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return data


def _skip_markers(client: Any, run_dir: RunDir) -> set[int]:
    bucket, prefix = split_url(run_dir.skips)
    prefix += "/"
    names = (item["Key"][len(prefix):] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for item in page.get("Contents", ()))
    return {int(name) for name in names if name.isdigit()}
