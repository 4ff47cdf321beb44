"""The batch file (``batches/B.pkl``): the tasks of one array, written by the client and read by each element.

::

    batch := index size (uint64, little-endian) index element*
    index := pickle of [(offset, size)] — each element's place, counted from the end of the index
    element := pickle of [(task_id, payload)]

An element reads only its own slice (:func:`element_tasks`: three reads, ranged GETs on S3), so a batch of
10^4 elements is not read 10^4 times over.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable, Sequence

_INDEX_SIZE = struct.Struct("<Q")


def encode_batch(elements: Sequence[Sequence[tuple[int, bytes]]]) -> bytes:
    """One batch file from each element's ``[(task_id, payload)]``."""
    blobs = [pickle.dumps(list(tasks), protocol=pickle.HIGHEST_PROTOCOL) for tasks in elements]
    offsets, position = [], 0
    for blob in blobs:
        offsets.append((position, len(blob)))
        position += len(blob)
    index = pickle.dumps(offsets, protocol=pickle.HIGHEST_PROTOCOL)
    return b"".join([_INDEX_SIZE.pack(len(index)), index, *blobs])


def element_tasks(read: Callable[[int, int], bytes], element: int) -> list[tuple[int, bytes]]:
    """An element's tasks from a batch file, given ``read(start, size)`` of its bytes."""
    (index_size,) = _INDEX_SIZE.unpack(read(0, _INDEX_SIZE.size))
    offset, size = pickle.loads(read(_INDEX_SIZE.size, index_size))[element]
    tasks: list[tuple[int, bytes]] = pickle.loads(read(_INDEX_SIZE.size + index_size + offset, size))
    return tasks


def read_element(path: str, element: int) -> list[tuple[int, bytes]]:
    """An element's tasks from a batch file on this machine's filesystem."""
    with open(path, "rb") as batch:
        def read(start: int, size: int) -> bytes:
            batch.seek(start)
            return batch.read(size)

        return element_tasks(read, element)
