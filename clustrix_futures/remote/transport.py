"""Where scheduler commands run and run-directory files live: this machine, or a host over SSH.

A backend builds argv lists; a transport runs them (never through a shell: over SSH every word is
``shlex.quote``d) and moves files. Every method is a coroutine run on the monitor's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Protocol


class TransportLost(Exception):
    """Raised by a transport that lost its connection and gave up reconnecting (after
    ``reconnect_give_up`` seconds). The monitor then fails every live future with ``CONNECTION_LOST``;
    the jobs themselves keep running and the run directory can be reattached."""


@dataclass(frozen=True)
class Completed:
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        text = (self.stderr.strip() or self.stdout.strip() or "(no output)")
        return f"`{' '.join(self.argv)}` exited with {self.returncode}: {text}"


class Transport(Protocol):
    """Runs commands and moves files on the machine where the scheduler and the run directory are."""

    async def run(self, argv: Sequence[str], input: Optional[bytes] = None) -> Completed: ...

    async def home(self) -> str: ...

    async def makedirs(self, path: str) -> None: ...

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None: ...

    async def read_many(self, paths: Sequence[str]) -> dict[str, Optional[bytes]]: ...

    async def read_span(self, path: str, start: int, end: Optional[int], limit: int) -> Optional[bytes]:
        """The last ``limit`` bytes of bytes ``start`` .. ``end`` (exclusive; None: to the end) of a file, read
        without reading the rest of it; None if the file does not exist."""

    async def listdir(self, path: str) -> list[str]: ...

    async def remove_tree(self, path: str) -> None: ...

    async def close(self) -> None: ...


class LocalTransport:
    """Commands as subprocesses of this process, files on this machine's filesystem."""

    async def run(self, argv: Sequence[str], input: Optional[bytes] = None) -> Completed:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            return Completed(argv, 127, "", f"cannot run {argv[0]}: {exc}")
        try:
            out, err = await process.communicate(input)
        except asyncio.CancelledError:  # reap it now: a process left behind outlives the event loop
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return Completed(argv, process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    async def home(self) -> str:
        return os.path.expanduser("~")

    async def makedirs(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None:
        temporary = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)

    async def read_many(self, paths: Sequence[str]) -> dict[str, Optional[bytes]]:
        found: dict[str, Optional[bytes]] = {}
        for path in paths:
            try:
                with open(path, "rb") as source:
                    found[path] = source.read()
            except FileNotFoundError:
                found[path] = None
        return found

    async def read_span(self, path: str, start: int, end: Optional[int], limit: int) -> Optional[bytes]:
        try:
            with open(path, "rb") as source:
                begin, stop = span_bounds(os.fstat(source.fileno()).st_size, start, end, limit)
                source.seek(begin)
                return source.read(stop - begin)
        except FileNotFoundError:
            return None

    async def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    async def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    async def close(self) -> None:
        pass


def span_bounds(size: int, start: int, end: Optional[int], limit: int) -> tuple[int, int]:
    """The bytes to read of a file of ``size`` bytes for :meth:`Transport.read_span`: ``[begin, stop)``."""
    stop = max(0, size if end is None else min(end, size))
    return min(stop, max(start, stop - max(limit, 0), 0)), stop
