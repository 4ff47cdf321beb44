"""The node's entry point: a local pool process, or one element of a scheduler array.

* ``python -m clustrix_futures.node.worker pool FD`` — a local pool process, fed over a socket (``FD``).
* ``python -m clustrix_futures.node.worker element RUN_DIR BATCH [INDEX]`` — one element of a scheduler array;
  ``INDEX`` defaults to the scheduler's array index variable.

Like all of :mod:`clustrix_futures.node`, this imports only :mod:`clustrix_futures.runfiles`,
:mod:`clustrix_futures.errors`, the standard library and cloudpickle: a compute node needs nothing else, and a
job starts fast. Only an S3 run imports :mod:`clustrix_futures.node.s3` and boto3, lazily, on the node.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

from clustrix_futures.node import calls
from clustrix_futures.node.calls import flush_output, journal_frame, output_frame, run_payload
from clustrix_futures.node.loading import loads_task
from clustrix_futures.runfiles import journal

if TYPE_CHECKING:
    from clustrix_futures.runfiles.layout import RunDir

# CLUSTRIX_ARRAY_INDEX (the ssh backend's supervisor, the Grid Engine launcher, a one-element PBS job) first:
# it wins over a scheduler's variable inherited from an allocation the host process itself runs in. Grid
# Engine's SGE_TASK_ID is not here: it counts from 1, and would name the wrong element.
ARRAY_INDEX_VARIABLES = ("CLUSTRIX_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID",
                         "JOB_COMPLETION_INDEX")
READY = b"R"
INIT_FAILED = b"I"


def pool_main(fd: int) -> None:
    """Serve tasks over a socket until it closes: one frame in, one outcome frame out, in order.

    The first frame is ``(sys.path, authkey, log levels, initializer)``: the client's ``sys.path`` and
    multiprocessing authkey (so ``Manager`` proxies connect), the levels its loggers have (records are forwarded
    to it as ``LOG`` frames, :mod:`clustrix_futures.node.logs`), and the initializer pickled with the
    multiprocessing objects it is handed (``clustrix_futures.local.handover``), or None. Once the client is gone
    (EOF, or a send that fails), the worker ends quietly: nothing is written to stderr.
    """
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        sys_path, authkey, levels, initializer = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    send = _sender(conn)
    _prepare(authkey, levels, send)
    if initializer is not None:
        failure = _initialize(initializer)
        if failure is not None:
            send(INIT_FAILED + failure.encode())
            return
    if not send(READY):
        return
    calls.part_sink = _part_sender(send)
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not send(run_payload(payload)):
            return


def _sender(conn: Any) -> Callable[[bytes], bool]:
    """``send(frame)``: sends one frame (from any thread: tasks may log from theirs); False once the client has
    closed its end."""
    import threading

    lock = threading.Lock()

    def send(frame: bytes) -> bool:
        with lock:
            try:
                conn.send_bytes(frame)
            except OSError:  # BrokenPipeError, ConnectionResetError: the client has gone
                return False
        return True

    return send


def _prepare(authkey: bytes, levels: tuple[dict[str, int], int], send: Callable[[bytes], bool]) -> None:
    """Take the client's multiprocessing authkey, and forward log records to it."""
    import multiprocessing

    from clustrix_futures.node import logs

    multiprocessing.current_process().authkey = authkey
    logs.install(levels[0], levels[1], send)


def _initialize(initializer: bytes) -> Optional[str]:
    """Run the initializer; None, or the traceback of what it raised."""
    try:
        fn, args, kwargs = loads_task(initializer)
        fn(*args, **kwargs)
    except BaseException:
        return traceback.format_exc()
    return None


def element_main(root: str, batch: int, element: Optional[int]) -> None:
    """Run one array element's tasks, journalling each outcome as it ends.

    Outcomes are appended to ``results/B-I.part``, which is renamed to ``results/B-I.res`` once complete:
    the monitor reads only complete files, and if the element dies, the journal still holds every task
    that finished, so only the task that was running is lost. A task whose ``skip/TASK`` marker exists
    (cancelled, or finished before the element was run again) is skipped.

    A run directory that is an ``s3://`` URL is an S3 run: :func:`clustrix_futures.node.s3.run_element` does
    the same through boto3, imported only then.
    """
    # Imported here, not at the top: a local pool process never reads run files, and it starts faster without.
    from clustrix_futures.node import measure
    from clustrix_futures.runfiles.batches import read_element
    from clustrix_futures.runfiles.layout import RunDir, is_s3

    if element is None:
        element = array_index()
    if is_s3(root):
        from clustrix_futures.node.s3 import run_element

        run_element(root, batch, element)
        return
    run_dir = RunDir(root)
    tasks = initialize_element(run_dir.initializer, batch, element, read_element(run_dir.batch_file(batch), element))
    partial = run_dir.partial(batch, element)
    reported = items_reported(partial, run_dir.journal_read(batch, element))
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # never through a symlink
    with os.fdopen(fd, "wb") as results:
        results.write(journal.preamble())
        results.flush()  # a reader of the running element's journal sees its version at once
        measure.write_start(results.fileno(), run_dir, batch)
        _journal_tasks(results, run_dir, tasks, (batch, element), reported)
        results.write(measure.end_frame())
        flush_output()  # what the last task printed is in the logs before the result is
        os.fsync(results.fileno())
    os.replace(partial, run_dir.result(batch, element))


def _journal_tasks(results: Any, run_dir: RunDir, tasks: list[tuple[int, bytes]], slot: tuple[int, int],
                   reported: dict[int, int]) -> None:
    """Run the element's tasks (``slot``: its batch and index) but those passed over, each outcome journalled
    as it ends; a task that checkpointed in an earlier run resumes from its checkpoint
    (:mod:`clustrix_futures.node.checkpointing`), and a map chunk from the items an earlier run ``reported``."""
    from clustrix_futures.runfiles.layout import CHECKPOINT_VARIABLE, CLAIM_VARIABLE

    claiming = os.environ.get(CLAIM_VARIABLE) == "1"
    checkpointing = os.environ.get(CHECKPOINT_VARIABLE)
    if checkpointing:
        from clustrix_futures.node import checkpointing as checkpoints

        checkpoints.install(checkpointing, run_dir, results)
    for task_id, payload in tasks:
        if passed_over(run_dir, task_id, *slot, claiming):
            continue
        if checkpointing:
            payload = checkpoints.resumed(run_dir, task_id, payload)
        results.write(output_frame(task_id))
        calls.part_sink = _part_writer(results, task_id)
        results.write(journal_frame(task_id, payload, reported.get(task_id, 0)))
        results.flush()


def items_reported(path: str, read_path: str) -> dict[int, int]:
    """For each map chunk of an earlier run of this element (whose journal is at ``path``), how many of its
    items, from the first on, were reported in parts in what the client had read of that journal when it ran
    the element again (the number in ``read_path``: nothing without it, as when the scheduler requeued the
    element by itself). The client has those items: the chunk goes on after them. Files this account did not
    write are not read."""
    read = _own_file(read_path) or b""
    data = _own_file(path) if read.isdigit() else None
    if not data:
        return {}
    data = data[:int(read)]
    reported: dict[int, int] = {}
    try:
        for frame in journal.read_frames(data):
            if frame.kind not in journal.KINDS:
                break  # damage: the client did not read past it either
            part = journal.read_part(data, frame)
            if part is not None and part[0] <= reported.setdefault(frame.task_id, part[0]):
                reported[frame.task_id] = max(reported[frame.task_id], part[0] + part[1])
    except ValueError:  # another journal version: no parts the chunk could go on from
        return {}
    return reported


def _own_file(path: str) -> Optional[bytes]:
    """The contents of ``path`` if it exists, is no symlink and belongs to this account; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read() if os.fstat(file.fileno()).st_uid == os.getuid() else None


def initialize_element(path: str, batch: int, element: int,
                       tasks: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Run the run's initializer (the file at ``path``, if there is one) once, before the element's first task;
    the tasks to run (raising the broken-executor error if it raised: :mod:`clustrix_futures.node.initializer`)."""
    from clustrix_futures.node.initializer import initialized, read_initializer

    return initialized(tasks, read_initializer(path), f"{batch}-{element}")


def passed_over(run_dir: RunDir, task_id: int, batch: int, element: int, claiming: bool) -> bool:
    """Whether to skip a task: its skip marker exists (cancelled, or done before this element ran again), or,
    in a batch whose tasks may be given back (``claiming``), the client took it back first: the task is
    claimed by making its claim directory, exclusively, so exactly one of the element and the client has it."""
    if os.path.exists(run_dir.skip(task_id)):
        return True
    if not claiming:
        return False
    try:
        os.mkdir(run_dir.claim(task_id, batch, element), 0o700)
    except FileExistsError:
        return True
    return False


def _part_sender(send: Callable[[bytes], bool]) -> calls.PartSink:
    """A pool process's sink for the parts of a running chunk: a message on its socket, the head of a part
    frame's body then its blob (:data:`~clustrix_futures.runfiles.journal.PART`; an outcome starts with a
    pickle's first opcode, never with the part tag)."""

    def send_part(first: int, count: int, blob: bytes) -> None:
        send(journal.PART.pack(journal.PART_TAG, first, count) + blob)  # a lost client: nothing to tell

    return send_part


def _part_writer(results: Any, task_id: int) -> calls.PartSink:
    """An element's sink for the parts of its running chunk ``task_id``: part frames in its journal, flushed
    (the monitor reads a running element's journal as it grows)."""

    def write(first: int, count: int, blob: bytes) -> None:
        results.write(journal.part_frame(task_id, time.time(), first, count, blob))
        results.flush()

    return write


def array_index() -> int:
    """This element's index, from the first of :data:`ARRAY_INDEX_VARIABLES` that is set."""
    found = [os.environ[name] for name in ARRAY_INDEX_VARIABLES if os.environ.get(name, "").isdigit()]
    if not found:
        sys.exit("clustrix_futures.node.worker: no array index given and none of "
                 + ", ".join(ARRAY_INDEX_VARIABLES) + " is set")
    return int(found[0])


def main(argv: Sequence[str]) -> None:
    if len(argv) == 2 and argv[0] == "pool":
        pool_main(int(argv[1]))
    elif len(argv) in (3, 4) and argv[0] == "element":
        element_main(argv[1], int(argv[2]), int(argv[3]) if len(argv) == 4 else None)
    else:
        sys.exit("usage: python -m clustrix_futures.node.worker pool FD | element RUN_DIR BATCH [INDEX]")


if __name__ == "__main__":
    main(sys.argv[1:])
