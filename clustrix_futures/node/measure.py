"""What an array element measures of itself, for ``clustrix-futures report``: no scheduler accounting needed.

An element writes two MEASURE frames to its journal (:func:`clustrix_futures.runfiles.journal.measure_frame`): one
as it starts (:func:`write_start`; :func:`start_frame` on S3), after the preamble, so that an element that dies
still says where it ran and when it started, and one as it ends (:func:`end_frame`), after its last task. Each
carries the node's name, the CPU time and peak resident memory so far (:func:`resource.getrusage`, the process and
its children), and the start frame the modification times of the files that date the element's queue wait on the
run's filesystem (see :class:`clustrix_futures.runfiles.journal.Measure`).

Imported only by an array element (never by a local pool process), like the rest of :mod:`clustrix_futures.node` it
imports only :mod:`clustrix_futures.runfiles` and the standard library.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Optional

from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.layout import RunDir

_started: list[float] = []  # when this element's start frame was made (node clock)


def start_frame(journal_fd: Optional[int], run_dir: Optional[RunDir], batch: int) -> bytes:
    """The MEASURE frame of an element starting now. With the journal's file descriptor (its preamble flushed)
    and the run directory, it holds the journal's and the batch files' modification times: both stamped by
    the filesystem, so their difference is the queue wait on one clock. S3 runs pass None (no such times)."""
    now = time.time()
    _started[:] = [now]
    stamps = (0.0, 0.0, 0.0)
    if journal_fd is not None and run_dir is not None:
        stamps = (os.fstat(journal_fd).st_mtime, _mtime(run_dir.batch_file(batch)),
                  _mtime(run_dir.batch_script(batch)))
    return journal.measure_frame(journal.MEASURE_START, now, now, *_usage(), *stamps, os.uname().nodename)


def write_start(journal_fd: int, run_dir: RunDir, batch: int) -> None:
    """Append the start frame to a journal whose buffered writes are flushed, at once (unbuffered): if the
    element dies in its first task, the frame is there."""
    os.write(journal_fd, start_frame(journal_fd, run_dir, batch))


def end_frame() -> bytes:
    """The MEASURE frame of the element ending now: its CPU time and peak memory over its whole run."""
    now = time.time()
    start = _started[0] if _started else now
    return journal.measure_frame(journal.MEASURE_END, start, now, *_usage(), 0.0, 0.0, 0.0, os.uname().nodename)


def _usage() -> tuple[float, int]:
    """CPU seconds (user and system, this process and its waited-for children) and the peak resident set in
    bytes (the larger of this process's and its largest child's)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return cpu, max(own.ru_maxrss, children.ru_maxrss) * unit


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
