"""The code that runs tasks, in a local pool process or on a compute node.

This module imports only the standard library, cloudpickle and ``clustrix_futures.errors`` (itself
standard library only), so a compute node needs nothing else, and a job starts fast. Only a run whose
storage is S3 also imports :mod:`clustrix_futures.remote.storage` and boto3, lazily, on the node.

A *task payload* is ``cloudpickle.dumps((fn, args, kwargs))``. Running it gives an *outcome*, always
encoded by :func:`encode_outcome` as ``(ok, value_or_exception, traceback_text, seconds)``. An outcome
always unpickles: a result that cannot be pickled becomes a ``TypeError`` outcome, and an exception that
cannot make the round trip becomes a :class:`~clustrix_futures.errors.RemoteError`.

Entry points:

* ``python -m clustrix_futures.node.worker pool FD`` — a local pool process, fed over a socket (``FD``).
* ``python -m clustrix_futures.node.worker element RUN_DIR BATCH [INDEX]`` — one element of a scheduler array;
  ``INDEX`` defaults to the scheduler's array index variable.
"""

from __future__ import annotations

import itertools
import os
import pickle
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Optional

import cloudpickle

from clustrix_futures.errors import RemoteError

Outcome = tuple[bool, Any, str, float]

# CLUSTRIX_ARRAY_INDEX (the ssh backend's supervisor, the Grid Engine launcher, a one-element PBS job) first:
# it wins over a scheduler's variable inherited from an allocation the host process itself runs in. Grid
# Engine's SGE_TASK_ID is not here: it counts from 1, and would name the wrong element.
ARRAY_INDEX_VARIABLES = ("CLUSTRIX_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID",
                         "JOB_COMPLETION_INDEX")
_HEADER = struct.Struct("<Q")


def _failure(exc: BaseException) -> tuple[BaseException, str]:
    """The exception as it should travel, with its formatted traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.loads(cloudpickle.dumps(exc))
    except Exception:
        kind = type(exc)
        return RemoteError(f"{kind.__module__}.{kind.__qualname__}", str(exc), text), text
    return exc, text


def run_call(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict) -> Outcome:
    start = time.perf_counter()
    try:
        return (True, fn(*args, **kwargs), "", time.perf_counter() - start)
    except BaseException as exc:
        exc, text = _failure(exc)
        return (False, exc, text, time.perf_counter() - start)


def encode_outcome(outcome: Outcome) -> bytes:
    try:
        return cloudpickle.dumps(outcome)
    except Exception as exc:
        ok, value, _, seconds = outcome
        if ok and isinstance(value, ChunkResult):
            return encode_outcome((True, _picklable_chunk(value), "", seconds))
        if ok:
            problem: BaseException = TypeError(
                f"the task's result, a {type(value).__qualname__}, could not be pickled: {exc}")
        else:
            problem = value
        err, text = _failure(problem)
        return cloudpickle.dumps((False, err, text, seconds))


def run_payload(payload: bytes) -> bytes:
    """Unpickle a task payload, run it, and return its encoded outcome."""
    try:
        fn, args, kwargs = cloudpickle.loads(payload)
    except BaseException as exc:
        err, text = _failure(exc)
        return encode_outcome((False, err, "the task could not be unpickled on the worker:\n" + text, 0.0))
    return encode_outcome(run_call(fn, args, kwargs))


class ChunkResult:
    """The values of a map chunk, item by item, with the failures of the items that raised.

    ``failures`` maps an item's position to ``(exception, traceback text)``; its slot in ``values`` is None.
    ``seconds`` is how long the items ran, for sizing later chunks. ``stopped_at`` is None when the chunk ran
    to its end; otherwise its time budget ran out after its first ``stopped_at`` items (``values`` holds just
    those; the rest, possibly none, did not run). ``values`` and ``failures`` travel as one pickled blob,
    decoded only when first read: a client holding many finished chunks the consumer has not reached yet
    holds compact bytes, not millions of objects.
    """

    __slots__ = ("_blob", "_failures", "_values", "seconds", "stopped_at")

    def __init__(self, values: Optional[list[Any]], failures: Optional[dict[int, tuple[BaseException, str]]],
                 seconds: float, blob: Optional[bytes] = None, stopped_at: Optional[int] = None) -> None:
        self._values = values
        self._failures = failures
        self.seconds = seconds
        self._blob = blob
        self.stopped_at = stopped_at

    def _decode(self) -> None:
        if self._blob is not None:
            self._values, self._failures = pickle.loads(self._blob)
            self._blob = None

    @property
    def values(self) -> list[Any]:
        self._decode()
        assert self._values is not None
        return self._values

    @property
    def failures(self) -> dict[int, tuple[BaseException, str]]:
        self._decode()
        assert self._failures is not None
        return self._failures

    def __reduce__(self) -> tuple[Any, ...]:
        blob = self._blob or cloudpickle.dumps((self._values, self._failures), protocol=pickle.HIGHEST_PROTOCOL)
        return (ChunkResult, (None, None, self.seconds, blob, self.stopped_at))


MAX_STEP = 4096  # items run between two looks at the clock, once items have proved fast


def apply_chunk(fn: Callable[..., Any], items: Iterable[Any], star: bool,
                budget: Optional[float] = None) -> ChunkResult:
    """Run ``fn`` over a chunk of a map. One failing item loses no other: the run goes on after it.

    The items run in one ``map()`` (no per-item bookkeeping); only a raising item costs extra. With a
    ``budget`` (seconds), the chunk stops at the first look at the clock past it and reports how far it got
    (``ChunkResult.stopped_at``): the clock is read after 1, 2, 4 ... items (at most ``MAX_STEP`` apart,
    and never more items than the budget left is expected to fit), so a chunk runs at most its budget plus
    one item, and fast items pay a few dozen clock reads per chunk.
    """
    values: list[Any] = []
    failures: dict[int, tuple[BaseException, str]] = {}
    remaining = iter(items)
    start = time.perf_counter()
    deadline = None if budget is None else start + budget
    step = 1
    while True:
        try:
            if deadline is None:
                values.extend(itertools.starmap(fn, remaining) if star else map(fn, remaining))
                return ChunkResult(values, failures, time.perf_counter() - start)
            while True:
                before = len(values)
                part = itertools.islice(remaining, step)
                values.extend(itertools.starmap(fn, part) if star else map(fn, part))
                now = time.perf_counter()
                if len(values) - before < step:
                    return ChunkResult(values, failures, now - start)
                if now >= deadline:
                    return ChunkResult(values, failures, now - start, stopped_at=len(values))
                per_item = (now - start) / len(values)
                step = max(1, min(step * 2, MAX_STEP, int((deadline - now) / max(per_item, 1e-9))))
        except BaseException as exc:
            failures[len(values)] = _failure(exc)
            values.append(None)


def _picklable_chunk(chunk: ChunkResult) -> ChunkResult:
    """A chunk whose values did not all pickle: fail exactly the items that do not."""
    for position, value in enumerate(chunk.values):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            chunk.values[position] = None
            chunk.failures[position] = _failure(TypeError(
                f"the task's result, a {type(value).__qualname__}, could not be pickled: {exc}"))
    return chunk


# ---------------------------------------------------------------- local pool process

READY = b"R"
INIT_FAILED = b"I"


def pool_main(fd: int) -> None:
    """Serve tasks over a socket until it closes: one frame in, one outcome frame out, in order."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    sys_path, initializer = pickle.loads(conn.recv_bytes())
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    if initializer is not None:
        try:
            fn, args, kwargs = cloudpickle.loads(initializer)
            fn(*args, **kwargs)
        except BaseException:
            conn.send_bytes(INIT_FAILED + traceback.format_exc().encode())
            return
    conn.send_bytes(READY)
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(run_payload(payload))


# ---------------------------------------------------------------- scheduler array element

def encode_batch(elements: Sequence[Sequence[tuple[int, bytes]]]) -> bytes:
    """One batch file: an index of element offsets, then each element's ``[(task_id, payload)]``.

    An element reads only its own slice, so a batch of 10^4 elements is not read 10^4 times over.
    """
    blobs = [pickle.dumps(list(tasks), protocol=pickle.HIGHEST_PROTOCOL) for tasks in elements]
    offsets, position = [], 0
    for blob in blobs:
        offsets.append((position, len(blob)))
        position += len(blob)
    index = pickle.dumps(offsets, protocol=pickle.HIGHEST_PROTOCOL)
    return b"".join([_HEADER.pack(len(index)), index, *blobs])


def element_tasks(read: Callable[[int, int], bytes], element: int) -> list[tuple[int, bytes]]:
    """An element's tasks from a batch file, given ``read(start, size)`` of its bytes: three reads."""
    (index_size,) = _HEADER.unpack(read(0, _HEADER.size))
    offset, size = pickle.loads(read(_HEADER.size, index_size))[element]
    tasks: list[tuple[int, bytes]] = pickle.loads(read(_HEADER.size + index_size + offset, size))
    return tasks


def read_element(path: str, element: int) -> list[tuple[int, bytes]]:
    with open(path, "rb") as batch:
        def read(start: int, size: int) -> bytes:
            batch.seek(start)
            return batch.read(size)

        return element_tasks(read, element)


RESULT_SUFFIX = ".res"
PARTIAL_SUFFIX = ".part"
_FRAME = struct.Struct("<I")


def encode_frame(task_id: int, outcome: bytes) -> bytes:
    body = pickle.dumps((task_id, outcome), protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(body)) + body


def read_journal(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The ``(task_id, encoded outcome)`` frames of a result journal, in order.

    A torn last frame (a journal still being written, or cut by a crash) ends the iteration quietly; a frame
    that does not unpickle raises ``ValueError``, after the good frames before it were yielded.
    """
    position = 0
    while position + _FRAME.size <= len(data):
        (size,) = _FRAME.unpack_from(data, position)
        body = data[position + _FRAME.size:position + _FRAME.size + size]
        if len(body) < size:
            return
        try:
            task_id, outcome = pickle.loads(body)
        except Exception as exc:
            raise ValueError(f"frame at byte {position} does not unpickle: {exc!r}") from exc
        yield task_id, outcome
        position += _FRAME.size + size


def element_main(run_dir: str, batch: int, element: Optional[int]) -> None:
    """Run one array element's tasks, journalling each outcome as it ends.

    Outcomes are appended to ``results/B-I.part``, which is renamed to ``results/B-I.res`` once complete:
    the monitor reads only complete files, and if the element dies, the journal still holds every task
    that finished, so only the task that was running is lost. A task whose ``skip/TASK`` marker exists
    (cancelled, or finished before the element was run again) is skipped.

    A run directory that is an ``s3://`` URL is an S3 run: :func:`clustrix_futures.remote.storage.run_element` does
    the same through boto3, imported only then.
    """
    if element is None:
        found = [os.environ[name] for name in ARRAY_INDEX_VARIABLES if os.environ.get(name, "").isdigit()]
        if not found:
            sys.exit("clustrix_futures.node.worker: no array index given and none of "
                     + ", ".join(ARRAY_INDEX_VARIABLES) + " is set")
        element = int(found[0])
    if run_dir.startswith("s3://"):
        from clustrix_futures.remote.storage import run_element

        run_element(run_dir, batch, element)
        return
    tasks = read_element(os.path.join(run_dir, "batches", f"{batch}.pkl"), element)
    results = os.path.join(run_dir, "results")
    partial = os.path.join(results, f"{batch}-{element}{PARTIAL_SUFFIX}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as journal:
        for task_id, payload in tasks:
            if os.path.exists(os.path.join(run_dir, "skip", str(task_id))):
                continue
            journal.write(encode_frame(task_id, run_payload(payload)))
            journal.flush()
        os.fsync(journal.fileno())
    os.replace(partial, os.path.join(results, f"{batch}-{element}{RESULT_SUFFIX}"))


def main(argv: Sequence[str]) -> None:
    if len(argv) == 2 and argv[0] == "pool":
        pool_main(int(argv[1]))
    elif len(argv) in (3, 4) and argv[0] == "element":
        element_main(argv[1], int(argv[2]), int(argv[3]) if len(argv) == 4 else None)
    else:
        sys.exit("usage: python -m clustrix_futures.node.worker pool FD | element RUN_DIR BATCH [INDEX]")


if __name__ == "__main__":
    main(sys.argv[1:])
