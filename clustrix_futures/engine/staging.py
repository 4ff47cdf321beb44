"""Staging: the node's code copied into a run directory, for an interpreter that cannot import it.

What is copied is exactly what a compute node imports (:data:`NODE_CLOSURE` of this package, and cloudpickle),
pure Python, as ONE archive: one ``write`` through the transport and one command that unpacks it (refusing
any member that is not a plain file or directory inside the target) and removes it. Directories are 0700 and
files 0600, as everything in a run directory.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import time
from collections.abc import Iterator

import cloudpickle

import clustrix_futures
from clustrix_futures.errors import ConfigError
from clustrix_futures.remote.transport import Transport

# What a compute node imports of this package (paths relative to it): all that staging copies.
NODE_CLOSURE = ("__init__.py", "errors.py", "worker.py", "hostrun.py", "node" + os.sep, "runfiles" + os.sep)

# Run by the remote interpreter: python -c UNPACK ARCHIVE TARGET.
UNPACK = """\
import os, sys, tarfile
archive, target = sys.argv[1:3]
with tarfile.open(archive) as tar:
    members = tar.getmembers()
    for member in members:
        parts = member.name.split("/")
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            sys.exit("unsafe member in the staging archive: %r" % member.name)
    os.makedirs(target, 0o700, exist_ok=True)
    extra = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
    tar.extractall(target, members, **extra)
os.remove(archive)
"""


def _sources() -> Iterator[tuple[str, str]]:
    """(archive name, local path) of each staged file, directories before what they hold."""
    package = os.path.dirname(os.path.abspath(clustrix_futures.__file__))
    roots = [("clustrix_futures", package, NODE_CLOSURE),
             ("cloudpickle", os.path.dirname(os.path.abspath(cloudpickle.__file__)), None)]
    for name, directory, wanted in roots:
        for folder, _, entries in sorted(os.walk(directory)):
            relative = os.path.relpath(folder, directory)
            for entry in sorted(entries):
                inner = os.path.normpath(os.path.join(relative, entry))
                if entry.endswith(".py") and (wanted is None or inner.startswith(wanted)):
                    yield posixpath.join(name, *inner.split(os.sep)), os.path.join(folder, entry)


def archive() -> bytes:
    """The staged files as one gzipped tar archive."""
    buffer = io.BytesIO()
    made: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, path in _sources():
            parent = posixpath.dirname(name)
            parents = []
            while parent and parent not in made:
                parents.append(parent)
                parent = posixpath.dirname(parent)
            for directory in reversed(parents):
                made.add(directory)
                tar.addfile(_entry(directory, tarfile.DIRTYPE, 0o700, 0, time.time()))
            with open(path, "rb") as source:
                data = source.read()
            entry = _entry(name, tarfile.REGTYPE, 0o600, len(data), os.path.getmtime(path))
            tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def _entry(name: str, kind: bytes, mode: int, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, mtime
    return info


async def stage(transport: Transport, code_dir: str, python: str) -> None:
    """Put the node's code into ``code_dir`` (made if missing) on the transport's machine, for ``python`` (the
    interpreter the jobs run, which unpacks it); ConfigError if it cannot be unpacked there."""
    path = code_dir.rstrip("/") + ".tar.gz"
    await transport.write(path, archive())
    unpacked = await transport.run([python, "-c", UNPACK, path, code_dir])
    if not unpacked.ok:
        raise ConfigError(f"the worker's code could not be staged into {code_dir}: {unpacked.describe()}")
