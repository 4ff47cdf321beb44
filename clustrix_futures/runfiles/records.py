"""The JSON records of a run directory, written and read here: the manifest and the batch documents.

* ``manifest.json``: backend, options, interpreter — enough for a later process to reattach. It holds no
  secret: no SSH passphrase, and of ``env`` the names (``options.env_names``) and only its Secret references,
  never a literal value (an attaching client passes those again);
* ``batches/B.json`` (:func:`batch_document`): batch B's job id, the task ids of each element, its resources;
* ``batches/B-I.rerun.json`` (:func:`rerun_document`): the job of element I's last run, when it ran again.

The readers take any storage with ``read_many`` and ``listdir`` (:class:`RecordStore`; every client
``Storage`` is one), so this module imports nothing of the client.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Optional, Protocol

from clustrix_futures.errors import ConfigError
from clustrix_futures.runfiles.layout import RunDir


class RecordStore(Protocol):
    """What reading the records needs of a storage."""

    async def read_many(self, paths: Sequence[str]) -> dict[str, Optional[bytes]]: ...

    async def listdir(self, path: str) -> list[str]: ...


def encode_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True, default=str).encode()


def batch_document(batch: int, job_id: str, elements: list[list[int]], resources: dict[str, Any]) -> bytes:
    return encode_json({"batch": batch, "job_id": job_id, "elements": elements, "resources": resources})


def rerun_document(batch: int, element: int, job_id: str) -> bytes:
    return encode_json({"batch": batch, "index": element, "job_id": job_id})


async def read_manifest(storage: RecordStore, root: str, where: str, hint: str = "") -> dict[str, Any]:
    """The manifest of the run directory ``root``; ConfigError naming the run if it has none (it is not a run
    directory), or one that is not JSON or not a manifest of ours."""
    path = RunDir(root).manifest
    data = (await storage.read_many([path]))[path]
    if data is None:
        raise ConfigError(f"{root} on {where} is not a clustrix-futures run directory: it has no manifest.json{hint}")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"the manifest of the run {root} on {where} is corrupt (not JSON: {exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("backend"), str):
        raise ConfigError(f"{root} on {where} is not a clustrix-futures run directory: its manifest.json is not one "
                          f"of ours (no backend)")
    return manifest


async def read_batches(storage: RecordStore, run_dir: RunDir) -> list[dict[str, Any]]:
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
