"""The run directory: one per executor, on the filesystem the compute nodes see.

::

    RUN/manifest.json        backend, options, interpreter: enough for a later process to reattach
    RUN/initializer.pkl      the run's initializer, when it has one: run by each element before its first task
                             (:mod:`clustrix_futures.node.initializer`)
    RUN/batches/B.pkl        the tasks of batch B, indexed by element (:mod:`~clustrix_futures.runfiles.batches`)
    RUN/batches/B.sh         the job script of batch B
    RUN/batches/B.json       batch B's job id and the task ids of each element
    RUN/batches/B-I.rerun.json  the job of element I of batch B's last run, when it ran again
    RUN/batches/B-I.read     how many bytes of element I's journal the client had read when it ran the element
                             again (a decimal number): a map chunk goes on after the items reported in them
    RUN/batches/task-TASK.resume  the call a task that checkpointed runs instead of its payload, written by its
                             element (:mod:`clustrix_futures.node.checkpointing`)
    RUN/results/B-I.res      outcomes of element I of batch B (journalled as B-I.part, then renamed)
                             (:mod:`~clustrix_futures.runfiles.journal`)
    RUN/results/B-I.N.seg    S3 runs only: the N-th piece of a running element's journal (pieces 0..N, put
                             end to end, are the journal so far; deleted once B-I.res is written)
    RUN/logs/B-I.out|.err    the element's stdout and stderr
    RUN/skip/TASK            marker: skip this task if its element runs (cancelled, or already done)
    RUN/skip/TASK.B-I        claim (a directory, made exclusively) of a task of a cold burst's element I of
                             batch B: made by the element as the task starts, or by the client first, when it
                             takes the task back from an element still busy with its first tasks
    RUN/code/                the worker's code, staged only when the remote interpreter lacks it
    RUN/host/                the SSH-host backend's supervisor state (:mod:`clustrix_futures.node.host_supervisor`)

Directories are created 0700 and files 0600. The JSON records (manifest, ``B.json``, ``B-I.rerun.json``) are
:mod:`clustrix_futures.runfiles.records`.

With S3 storage (``storage="s3://bucket/prefix"``) the run's root is ``s3://bucket/prefix/RUN`` and holds
everything above but the job scripts, the logs and the staged code: those stay where the scheduler reads
and writes them, in ``host`` (``WORK_DIR/RUN`` on the transport's filesystem; unused by Kubernetes, where
scripts travel in the Job and logs are the pods'). Without S3 storage ``host`` is the root itself. An S3 path
is ``s3://BUCKET/KEY``: :func:`split_url` gives the bucket and the key. A job script of an S3 run with an
``endpoint_url`` exports it as :data:`ENDPOINT_VARIABLE`.

Both sides use this module: the client to make a run, the node (:mod:`clustrix_futures.node`) to find its
batch, results and skip markers. Standard library only.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Mapping, Sequence
from typing import Optional

SUBDIRECTORIES = ("batches", "results", "logs", "skip")
RESULT_SUFFIX = ".res"
PARTIAL_SUFFIX = ".part"
SEGMENT_SUFFIX = ".seg"
SCHEME = "s3://"
ENDPOINT_VARIABLE = "CLUSTRIX_S3_ENDPOINT_URL"  # set in job scripts when the run has an endpoint_url
CLAIM_VARIABLE = "CLUSTRIX_CLAIM_TASKS"  # "1" in the job script of a batch whose tasks may be given back
CHECKPOINT_VARIABLE = "CLUSTRIX_CHECKPOINT_SIGNAL"  # the signal's name where tasks checkpoint on a warning


def new_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + os.urandom(4).hex()  # what secrets.token_hex does, without its imports


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


class RunDir:  # a plain class: the node imports this, and making a dataclass or NamedTuple costs its start-up
    """The paths of one run directory (see the module docstring), each a filesystem path or an ``s3://`` URL.

    ``root`` is the run's storage: a directory, or an s3:// URL; ``host_root`` holds the job scripts, logs and
    staged code when they are not under ``root`` (S3 storage).
    """

    __slots__ = ("host_root", "root")

    def __init__(self, root: str, host_root: Optional[str] = None) -> None:
        self.root = root
        self.host_root = host_root

    def __repr__(self) -> str:
        return f"RunDir({self.root!r}, {self.host_root!r})"

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def host(self) -> str:
        return self.host_root or self.root

    @property
    def results(self) -> str:
        return self.path("results")

    @property
    def skips(self) -> str:
        return self.path("skip")

    @property
    def code(self) -> str:
        return posixpath.join(self.host, "code")

    def batch_file(self, batch: int) -> str:
        return self.path("batches", f"{batch}.pkl")

    def batch_script(self, batch: int) -> str:
        return posixpath.join(self.host, "batches", f"{batch}.sh")

    def batch_meta(self, batch: int) -> str:
        return self.path("batches", f"{batch}.json")

    def rerun_meta(self, batch: int, element: int) -> str:
        return self.path("batches", f"{batch}-{element}.rerun.json")

    def journal_read(self, batch: int, element: int) -> str:
        return self.path("batches", f"{batch}-{element}.read")

    def resume(self, task_id: int) -> str:
        return self.path("batches", f"task-{task_id}.resume")

    def result(self, batch: int, element: int) -> str:
        return self.path("results", f"{batch}-{element}{RESULT_SUFFIX}")

    def partial(self, batch: int, element: int) -> str:
        return self.path("results", f"{batch}-{element}{PARTIAL_SUFFIX}")

    def segment(self, batch: int, element: int, number: int) -> str:
        return self.path("results", f"{batch}-{element}.{number}{SEGMENT_SUFFIX}")

    def log(self, batch: int, element: str, stream: str) -> str:
        return posixpath.join(self.host, "logs", f"{batch}-{element}.{stream}")

    def skip(self, task_id: int) -> str:
        return self.path("skip", str(task_id))

    def claim(self, task_id: int, batch: int, element: int) -> str:
        return self.path("skip", f"{task_id}.{batch}-{element}")

    @property
    def manifest(self) -> str:
        return self.path("manifest.json")

    @property
    def initializer(self) -> str:
        return self.path("initializer.pkl")


def parse_result_name(name: str) -> Optional[tuple[int, int]]:
    """``"3-17.res"`` to ``(3, 17)``; None for anything else (temporary or partial files)."""
    if not name.endswith(RESULT_SUFFIX):
        return None
    batch, _, element = name[:-len(RESULT_SUFFIX)].partition("-")
    return (int(batch), int(element)) if batch.isdigit() and element.isdigit() else None


def parse_segment_name(name: str) -> Optional[tuple[int, int, int]]:
    """``"3-17.2.seg"`` to ``(3, 17, 2)``; None for anything else."""
    if not name.endswith(SEGMENT_SUFFIX):
        return None
    slot, _, number = name[:-len(SEGMENT_SUFFIX)].rpartition(".")
    parsed = parse_result_name(slot + RESULT_SUFFIX)
    return (*parsed, int(number)) if parsed is not None and number.isdigit() else None


def job_script(run_dir: RunDir, batch: int, python: str, setup: Sequence[str], staged: bool,
               env: Optional[Mapping[str, str]] = None) -> str:
    """A bash script for one array element (POSIX sh too, as Kubernetes runs it). ``setup`` lines are the
    user's shell code, run as written; ``env`` is exported first; every path and value we insert is quoted, the
    comment's too (as a Python literal, so a newline in a path cannot end the comment and start a command).
    Where tasks checkpoint on a warning signal (``env`` sets :data:`CHECKPOINT_VARIABLE`), the worker replaces
    the shell (``exec``): the scheduler signals the job's shell, and the worker must be the one to get it."""
    import re
    import shlex  # here, not above: only the client writes job scripts, and the node's start-up need not pay

    bad = [name for name in (env or {}) if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)]
    if bad:
        raise ValueError(f"not environment variable names: {bad}")
    exports = [f"export {name}={shlex.quote(value)}" for name, value in sorted((env or {}).items())]
    lines = ["#!/bin/bash", f"# clustrix-futures: batch {batch} of {run_dir.root!r}", "set -e", *exports, *setup]
    if staged:
        lines.append(f"export PYTHONPATH={shlex.quote(run_dir.code)}${{PYTHONPATH:+:$PYTHONPATH}}")
    command = [python, "-m", "clustrix_futures.node.worker", "element", run_dir.root, str(batch)]
    lines.append(("exec " if CHECKPOINT_VARIABLE in (env or {}) else "") + " ".join(map(shlex.quote, command)))
    return "\n".join(lines) + "\n"
