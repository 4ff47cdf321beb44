"""The run directory: one per executor, on the filesystem the compute nodes see.

::

    RUN/manifest.json        backend, options, interpreter: enough for a later process to reattach
    RUN/batches/B.pkl        the tasks of batch B, indexed by element (one file per batch, not per task)
    RUN/batches/B.sh         the job script of batch B
    RUN/batches/B.json       batch B's job id and the task ids of each element
    RUN/results/B-I.res      outcomes of element I of batch B (journalled as B-I.part, then renamed)
    RUN/logs/B-I.out|.err    the element's stdout and stderr
    RUN/skip/TASK            marker: skip this task if its element runs (cancelled, or already done)
    RUN/code/                the worker's code, staged only when the remote interpreter lacks it

Directories are created 0700 and files 0600.

With S3 storage (``storage="s3://bucket/prefix"``) the run's root is ``s3://bucket/prefix/RUN`` and holds
everything above but the job scripts, the logs and the staged code: those stay where the scheduler reads
and writes them, in ``host`` (``WORK_DIR/RUN`` on the transport's filesystem; unused by Kubernetes, where
scripts travel in the Job and logs are the pods'). Without S3 storage ``host`` is the root itself.
"""

from __future__ import annotations

import json
import posixpath
import secrets
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from clustrix_futures.errors import ConfigError
from clustrix_futures.node.worker import PARTIAL_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    from clustrix_futures.remote.storage import Storage

SUBDIRECTORIES = ("batches", "results", "logs", "skip")


def new_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)


@dataclass(frozen=True)
class RunDir:
    root: str  # the run's storage: a directory, or an s3:// URL
    host_root: Optional[str] = None  # job scripts, logs and staged code, when not under root (S3 storage)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def host(self) -> str:
        return self.host_root or self.root

    @property
    def results(self) -> str:
        return self.path("results")

    @property
    def code(self) -> str:
        return posixpath.join(self.host, "code")

    def batch_file(self, batch: int) -> str:
        return self.path("batches", f"{batch}.pkl")

    def batch_script(self, batch: int) -> str:
        return posixpath.join(self.host, "batches", f"{batch}.sh")

    def batch_meta(self, batch: int) -> str:
        return self.path("batches", f"{batch}.json")

    def result(self, batch: int, element: int) -> str:
        return self.path("results", f"{batch}-{element}{RESULT_SUFFIX}")

    def partial(self, batch: int, element: int) -> str:
        return self.path("results", f"{batch}-{element}{PARTIAL_SUFFIX}")

    def log(self, batch: int, element: str, stream: str) -> str:
        return posixpath.join(self.host, "logs", f"{batch}-{element}.{stream}")

    def skip(self, task_id: int) -> str:
        return self.path("skip", str(task_id))

    @property
    def manifest(self) -> str:
        return self.path("manifest.json")


def parse_result_name(name: str) -> Optional[tuple[int, int]]:
    """``"3-17.res"`` to ``(3, 17)``; None for anything else (temporary or partial files)."""
    if not name.endswith(RESULT_SUFFIX):
        return None
    batch, _, element = name[:-len(RESULT_SUFFIX)].partition("-")
    return (int(batch), int(element)) if batch.isdigit() and element.isdigit() else None


def job_script(run_dir: RunDir, batch: int, python: str, setup: Sequence[str], staged: bool,
               env: Optional[Mapping[str, str]] = None) -> str:
    """A bash script for one array element (POSIX sh too, as Kubernetes runs it). ``setup`` lines are the
    user's shell code, run as written; ``env`` is exported first; every path and value we insert is quoted."""
    exports = [f"export {name}={shlex.quote(value)}" for name, value in sorted((env or {}).items())]
    lines = ["#!/bin/bash", f"# clustrix-futures: batch {batch} of {run_dir.root}", "set -e", *exports, *setup]
    if staged:
        lines.append(f"export PYTHONPATH={shlex.quote(run_dir.code)}${{PYTHONPATH:+:$PYTHONPATH}}")
    lines.append(" ".join(shlex.quote(word) for word in
                          [python, "-m", "clustrix_futures.node.worker", "element", run_dir.root, str(batch)]))
    return "\n".join(lines) + "\n"


def encode_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True, default=str).encode()


def batch_document(batch: int, job_id: str, elements: list[list[int]], resources: dict[str, Any]) -> bytes:
    return encode_json({"batch": batch, "job_id": job_id, "elements": elements, "resources": resources})


async def read_manifest(storage: Storage, root: str, where: str, hint: str = "") -> dict[str, Any]:
    """The manifest of the run directory ``root``; ConfigError if it has none (it is not a run directory)."""
    path = RunDir(root).manifest
    data = (await storage.read_many([path]))[path]
    if data is None:
        raise ConfigError(f"{root} on {where} is not a clustrix-futures run directory: it has no manifest.json{hint}")
    manifest: dict[str, Any] = json.loads(data)
    return manifest


async def read_batches(storage: Storage, run_dir: RunDir) -> list[dict[str, Any]]:
    """The recorded batches (``batches/B.json``) in order, each with ``job_ids``: the job of each element, the
    one of its last run for an element run again (``batches/B-I.rerun.json``)."""
    names = [n for n in await storage.listdir(run_dir.path("batches")) if n.endswith(".json")]
    contents = await storage.read_many([run_dir.path("batches", n) for n in names])
    documents = [json.loads(data) for data in contents.values() if data]
    reruns = {(d["batch"], d["index"]): d["job_id"] for d in documents if "index" in d}
    batches = sorted((d for d in documents if "elements" in d), key=lambda d: int(d["batch"]))
    for batch in batches:
        batch["job_ids"] = [reruns.get((batch["batch"], index), batch["job_id"])
                            for index in range(len(batch["elements"]))]
    return batches
