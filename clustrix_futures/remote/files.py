"""Filesystem helpers on the cluster, over the executor's own connection: ``ex.files.ls(path)``.

Each call is one command run by the cluster's interpreter (``python`` option) through the executor's
transport, so over SSH it shares the one connection; with local processes it runs here. Paths are passed as
arguments, never through a shell.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from clustrix_futures.remote.transport import LocalTransport, Transport

_SCRIPT = r"""
import fnmatch, glob, json, os, sys
op, path, pattern = sys.argv[1], os.path.expanduser(sys.argv[2]), sys.argv[3]
def info(p):
    s = os.stat(p)
    return {"path": p, "size": s.st_size, "mtime": s.st_mtime, "mode": s.st_mode, "is_dir": os.path.isdir(p)}
if op == "ls":
    out = sorted(os.listdir(path))
elif op == "stat":
    out = info(path)
elif op == "exists":
    out = os.path.exists(path)
elif op == "glob":
    out = sorted(glob.glob(os.path.join(path, pattern), recursive=True))
elif op == "find":
    out = sorted(os.path.join(d, n) for d, dirs, files in os.walk(path) for n in dirs + files
                 if fnmatch.fnmatch(n, pattern))
print(json.dumps(out))
"""


class RemoteFiles:
    """``ls``, ``find``, ``stat``, ``exists`` and ``glob`` where the tasks run: ``ex.files``.

    Each call runs one short command with the workers' interpreter (the ``python`` option), through the
    executor's transport: over its SSH connection with ``host``, on this machine otherwise (also for local
    processes). A leading ``~`` in a path is that machine's home. A call that fails (no such path, no
    permission) raises ``OSError`` with the last line of the remote error.
    """

    def __init__(self, run: Callable[[list[str]], Any], python: str) -> None:
        self._run = run
        self._python = python

    def _call(self, op: str, path: str, pattern: str = "*") -> Any:
        answer = self._run([self._python, "-c", _SCRIPT, op, path, pattern])
        if not answer.ok:
            last = answer.stderr.strip().splitlines()[-1:] or [answer.describe()]
            raise OSError(f"{op} {path!r} on the cluster failed: {last[0]}")
        return json.loads(answer.stdout)

    def ls(self, path: str = ".") -> list[str]:
        """Names in a directory, sorted."""
        return list(self._call("ls", path))

    def stat(self, path: str) -> dict[str, Any]:
        """``path``, ``size``, ``mtime``, ``mode`` and ``is_dir`` of a file or directory."""
        return dict(self._call("stat", path))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists there (False, not an error, when it does not)."""
        return bool(self._call("exists", path))

    def glob(self, pattern: str, root: str = ".") -> list[str]:
        """Paths under ``root`` matching a glob pattern (``**`` recurses)."""
        return list(self._call("glob", root, pattern))

    def find(self, root: str, name: str = "*") -> list[str]:
        """Every path under ``root`` whose name matches ``name`` (fnmatch), like ``find ROOT -name NAME``."""
        return list(self._call("find", root, name))


def local_files() -> RemoteFiles:
    import asyncio

    transport: Transport = LocalTransport()
    return RemoteFiles(lambda argv: asyncio.run(transport.run(argv)), sys.executable)
