"""The node's side of a run whose storage is S3: one array element, from ``batches/B.pkl`` to ``results/B-I.res``.

The element reads its slice of the batch object with ranged GETs, runs its tasks, and PUTs its journal
(:mod:`clustrix_futures.runfiles.journal`) as ``results/B-I.res`` once, at the end. Crash recovery uses a
checkpoint object ``results/B-I.part`` holding the journal so far: it is written after the element's first
task (when more follow), then again after a task once the time since the last checkpoint is at least
:data:`CHECKPOINT_FACTOR` times what that checkpoint took, so checkpoints cost at most about
1/CHECKPOINT_FACTOR of the element's run time. If the element dies, the tasks in the last checkpoint keep
their results; the rest fail with the element. The checkpoint is deleted after the result is written. Skip
markers (``skip/TASK``) are listed once when the element starts and again with each checkpoint.

boto3 is imported only here, only when an S3 run needs it (:func:`s3_client`, which the client's
``S3Storage`` uses too): filesystem runs need nothing beyond the standard library and cloudpickle on the node.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from clustrix_futures.node import measure
from clustrix_futures.node.calls import journal_frame, output_frame
from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.batches import element_tasks
from clustrix_futures.runfiles.layout import ENDPOINT_VARIABLE, RunDir, split_url

CHECKPOINT_FACTOR = 10.0


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
    tasks = _read_element(client, run_dir.batch_file(batch), element)
    _, partial = split_url(run_dir.partial(batch, element))
    skipped = _skip_markers(client, run_dir)
    frames = [journal.preamble(), measure.start_frame(None, None, batch)]
    checkpoint_cost: Optional[float] = None
    last_checkpoint = time.perf_counter()
    for position, (task_id, payload) in enumerate(tasks):
        if task_id in skipped:
            continue
        frames += [output_frame(task_id), journal_frame(task_id, payload)]
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


def _read_element(client: Any, url: str, element: int) -> list[tuple[int, bytes]]:
    """An element's slice of a batch object: three ranged GETs, whatever the batch's size."""
    bucket, key = split_url(url)

    def read(start: int, size: int) -> bytes:
        answer = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + size - 1}")
        data: bytes = answer["Body"].read()
        return data

    return element_tasks(read, element)


def _skip_markers(client: Any, run_dir: RunDir) -> set[int]:
    bucket, prefix = split_url(run_dir.skips)
    prefix += "/"
    names = (item["Key"][len(prefix):] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for item in page.get("Contents", ()))
    return {int(name) for name in names if name.isdigit()}
