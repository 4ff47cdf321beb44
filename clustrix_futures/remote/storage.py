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

The compute node's side of an S3 run is :mod:`clustrix_futures.node.s3`, whose boto3 client this module
uses too. boto3 is imported only when an S3 run needs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Any, Optional, Protocol

from clustrix_futures.node.s3 import s3_client
from clustrix_futures.runfiles.layout import split_url

PARALLEL_REQUESTS = 32
DELETE_BATCH = 1000  # delete_objects takes at most this many keys


class Storage(Protocol):
    """The file half of :class:`~clustrix_futures.remote.transport.Transport`, which every transport provides."""

    async def makedirs(self, path: str) -> None: ...

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None: ...

    async def read_many(self, paths: Sequence[str]) -> dict[str, Optional[bytes]]: ...

    async def listdir(self, path: str) -> list[str]: ...

    async def remove_tree(self, path: str) -> None: ...


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


class S3Storage:
    """:class:`Storage` on S3 through boto3, each request on a worker thread. ``requests`` counts the S3
    requests made, by operation (``ListObjectsV2``, ``GetObject``...), pages included."""

    def __init__(self, endpoint_url: Optional[str] = None) -> None:
        self.client = s3_client(endpoint_url, PARALLEL_REQUESTS)
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
