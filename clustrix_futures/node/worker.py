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
import traceback
from collections.abc import Sequence
from typing import Optional

import cloudpickle

from clustrix_futures.node.calls import flush_output, journal_frame, output_frame, run_payload
from clustrix_futures.runfiles import journal

# CLUSTRIX_ARRAY_INDEX (the ssh backend's supervisor, the Grid Engine launcher, a one-element PBS job) first:
# it wins over a scheduler's variable inherited from an allocation the host process itself runs in. Grid
# Engine's SGE_TASK_ID is not here: it counts from 1, and would name the wrong element.
ARRAY_INDEX_VARIABLES = ("CLUSTRIX_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID",
                         "JOB_COMPLETION_INDEX")
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
    tasks = read_element(run_dir.batch_file(batch), element)
    partial = run_dir.partial(batch, element)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # never through a symlink
    with os.fdopen(fd, "wb") as results:
        results.write(journal.preamble())
        results.flush()  # a reader of the running element's journal sees its version at once
        measure.write_start(results.fileno(), run_dir, batch)
        for task_id, payload in tasks:
            if os.path.exists(run_dir.skip(task_id)):
                continue
            results.write(output_frame(task_id))
            results.write(journal_frame(task_id, payload))
            results.flush()
        results.write(measure.end_frame())
        flush_output()  # what the last task printed is in the logs before the result is
        os.fsync(results.fileno())
    os.replace(partial, run_dir.result(batch, element))


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
