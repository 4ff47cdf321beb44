"""Where a run's payloads, results, skip markers and records live: a filesystem, or S3.

The monitor and the engine see one interface, :class:`Storage`: ``write`` (atomic: a reader sees the old
content or the new, never a part), ``read_many``, ``listdir``, ``makedirs``, ``remove_tree``, all
coroutines, all on full paths under the run's root. Two kinds:

* the filesystem the transport reaches (this machine's, or the SSH host's over SFTP): the transport itself
  is the storage (its file methods are exactly this interface), so such runs behave as they always did;
* S3 (``storage="s3://bucket/prefix"``, option ``endpoint_url`` for S3-compatible stores, credentials from
  boto3's usual chain): :class:`S3Storage`. Paths are ``s3://bucket/key`` URLs; a "directory" is a key prefix
  ending in ``/``. ``listdir`` is ONE paginated ``list_objects_v2`` (``Delimiter="/"``), ``read_many`` gets
  objects concurrently, ``write`` is one ``put_object`` (atomic per object).

On the compute node, :func:`run_element` is the worker's side of an S3 run (see :mod:`clustrix_futures.node.worker`
for the filesystem side): it reads its slice of ``batches/B.pkl`` with ranged GETs, runs its tasks, and
PUTs ``results/B-I.res`` once, at the end. Crash recovery uses a checkpoint object ``results/B-I.part``
holding the journal so far: it is written after the element's first task (when more follow), then again
after a task once the time since the last checkpoint is at least :data:`CHECKPOINT_FACTOR` times what that
checkpoint took, so checkpoints cost at most about 1/CHECKPOINT_FACTOR of the element's run time. If the
element dies, the tasks in the last checkpoint keep their results; the rest fail with the element. The
checkpoint is deleted after the result is written. Skip markers (``skip/TASK``) are listed once when the
element starts and again with each checkpoint.

boto3 is imported only here, only when an S3 run needs it: filesystem runs need nothing beyond the
standard library and cloudpickle on the node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import posixpath
import time
from collections.abc import Sequence
from typing import Any, Optional, Protocol

SCHEME = "s3://"
ENDPOINT_VARIABLE = "CLUSTRIX_S3_ENDPOINT_URL"  # set in job scripts when the run has an endpoint_url
PARALLEL_REQUESTS = 32
CHECKPOINT_FACTOR = 10.0
DELETE_BATCH = 1000  # delete_objects takes at most this many keys


class Storage(Protocol):
    """The file half of :class:`~clustrix_futures.remote.transport.Transport`, which every transport provides."""

    async def makedirs(self, path: str) -> None: ...

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None: ...

    async def read_many(self, paths: Sequence[str]) -> dict[str, Optional[bytes]]: ...

    async def listdir(self, path: str) -> list[str]: ...

    async def remove_tree(self, path: str) -> None: ...


def is_s3(location: Optional[str]) -> bool:
    return bool(location) and str(location).startswith(SCHEME)


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` to ``("bucket", "a/b")``."""
    if not is_s3(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len(SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, key.strip("/")


def s3_client(endpoint_url: Optional[str]) -> Any:
    """A boto3 S3 client (credentials and region from boto3's chain; ``us-east-1`` if none is configured)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url or None, region_name=session.region_name or "us-east-1",
                          config=Config(max_pool_connections=PARALLEL_REQUESTS,
                                        retries={"mode": "standard", "max_attempts": 5}))


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


class S3Storage:
    """:class:`Storage` on S3 through boto3, each request on a worker thread. ``requests`` counts the S3
    requests made, by operation (``ListObjectsV2``, ``GetObject``...), pages included."""

    def __init__(self, endpoint_url: Optional[str] = None) -> None:
        self.client = s3_client(endpoint_url)
        self.requests: dict[str, int] = {}
        self.client.meta.events.register("before-call.s3", self._count)
        self._pool = concurrent.futures.ThreadPoolExecutor(PARALLEL_REQUESTS, thread_name_prefix="clustrix-s3")

    def _count(self, model: Any, **_: Any) -> None:
        self.requests[model.name] = self.requests.get(model.name, 0) + 1

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: function(*args, **kwargs))

    async def check(self, url: str) -> None:
        """Raise if the bucket cannot be listed (missing, no credentials, unreachable endpoint)."""
        bucket, key = split_url(url)
        await self._call(self.client.list_objects_v2, Bucket=bucket, Prefix=key, MaxKeys=1)

    async def makedirs(self, path: str) -> None:
        """Nothing to do: prefixes exist as soon as an object has them."""

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None:
        bucket, key = split_url(path)
        await self._call(self.client.put_object, Bucket=bucket, Key=key, Body=data)

    async def read_many(self, paths: Sequence[str]) -> dict[str, Optional[bytes]]:
        def get(path: str) -> Optional[bytes]:
            bucket, key = split_url(path)
            try:
                data: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as exc:
                if _missing(exc):
                    return None
                raise
            return data

        loop = asyncio.get_running_loop()
        contents = await asyncio.gather(*(loop.run_in_executor(self._pool, get, path) for path in paths))
        return dict(zip(paths, contents))

    async def listdir(self, path: str) -> list[str]:
        """The names directly under ``path``: one paginated ``list_objects_v2``."""
        bucket, key = split_url(path)

        def names() -> list[str]:
            prefix = key + "/" if key else ""
            found = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix,
                                                                              Delimiter="/"):
                found += [item["Key"][len(prefix):] for item in page.get("Contents", ())]
                found += [item["Prefix"][len(prefix):].rstrip("/") for item in page.get("CommonPrefixes", ())]
            return found

        result: list[str] = await self._call(names)
        return result

    async def remove_tree(self, path: str) -> None:
        bucket, key = split_url(path)

        def remove() -> None:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key + "/")
            keys = [{"Key": item["Key"]} for page in pages for item in page.get("Contents", ())]
            for start in range(0, len(keys), DELETE_BATCH):
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + DELETE_BATCH],
                                                                  "Quiet": True})

        await self._call(remove)

    async def close(self) -> None:
        self._pool.shutdown(wait=False)


# ---------------------------------------------------------------- on the compute node

def run_element(run_dir: str, batch: int, element: int) -> None:
    """The worker's side of an S3 run: one array element's tasks, from ``batches/B.pkl`` to
    ``results/B-I.res`` (see the module docstring for checkpoints and skip markers)."""
    from clustrix_futures.node.worker import PARTIAL_SUFFIX, RESULT_SUFFIX, encode_frame, run_payload

    client = s3_client(os.environ.get(ENDPOINT_VARIABLE))
    bucket, root = split_url(run_dir)
    tasks = _read_element(client, bucket, posixpath.join(root, "batches", f"{batch}.pkl"), element)
    partial = posixpath.join(root, "results", f"{batch}-{element}{PARTIAL_SUFFIX}")
    skipped = _skip_markers(client, bucket, root)
    frames: list[bytes] = []
    checkpoint_cost: Optional[float] = None
    last_checkpoint = time.perf_counter()
    for position, (task_id, payload) in enumerate(tasks):
        if task_id in skipped:
            continue
        frames.append(encode_frame(task_id, run_payload(payload)))
        more = position < len(tasks) - 1
        if more and (checkpoint_cost is None
                     or time.perf_counter() - last_checkpoint >= CHECKPOINT_FACTOR * checkpoint_cost):
            start = time.perf_counter()
            client.put_object(Bucket=bucket, Key=partial, Body=b"".join(frames))
            skipped |= _skip_markers(client, bucket, root)
            last_checkpoint = time.perf_counter()
            checkpoint_cost = last_checkpoint - start
    result = posixpath.join(root, "results", f"{batch}-{element}{RESULT_SUFFIX}")
    client.put_object(Bucket=bucket, Key=result, Body=b"".join(frames))
    if checkpoint_cost is not None:
        client.delete_object(Bucket=bucket, Key=partial)


def _read_element(client: Any, bucket: str, key: str, element: int) -> list[tuple[int, bytes]]:
    """An element's slice of a batch object: three ranged GETs, whatever the batch's size."""
    from clustrix_futures.node.worker import element_tasks

    def read(start: int, size: int) -> bytes:
        answer = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + size - 1}")
        data: bytes = answer["Body"].read()
        return data

    return element_tasks(read, element)


def _skip_markers(client: Any, bucket: str, root: str) -> set[int]:
    prefix = posixpath.join(root, "skip") + "/"
    names = (item["Key"][len(prefix):] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for item in page.get("Contents", ()))
    return {int(name) for name in names if name.isdigit()}
