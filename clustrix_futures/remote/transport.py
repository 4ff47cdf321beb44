"""Where scheduler commands run and run-directory files live: this machine, or a host over SSH.

A backend builds argv lists; a transport runs them (never through a shell's quoting: over SSH every word is
encoded by :mod:`clustrix_futures.remote.commandline`) and moves files.
Every method is a coroutine run on the monitor's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
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


@dataclass(frozen=True)
class PathStat:
    """The owner and mode (``st_mode``: type and permission bits) of a path, not following a final symlink."""

    uid: int
    mode: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)


class Transport(Protocol):
    """Runs commands and moves files on the machine where the scheduler and the run directory are."""

    async def run(self, argv: Sequence[str], input: Optional[bytes] = None) -> Completed: ...

    async def home(self) -> str: ...

    async def makedirs(self, path: str) -> None: ...

    async def mkdir(self, path: str) -> None: ...

    async def lstat(self, path: str, follow: bool = False) -> Optional[PathStat]: ...

    async def uid(self) -> int: ...

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None: ...

    async def read_many(self, paths: Sequence[str]) -> dict[str, Optional[bytes]]: ...

    async def read_span(self, path: str, start: int, end: Optional[int], limit: int) -> Optional[bytes]:
        """The last ``limit`` bytes of bytes ``start`` .. ``end`` (exclusive; None: to the end) of a file, read
        without reading the rest of it; None if the file does not exist."""
        ...

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

    async def mkdir(self, path: str) -> None:
        """Create ``path`` (mode 0700); FileExistsError if anything is there already."""
        os.mkdir(path, 0o700)

    async def lstat(self, path: str, follow: bool = False) -> Optional[PathStat]:
        """The owner and mode of ``path`` (of a final symlink's target with ``follow``); None if it is missing."""
        try:
            found = os.stat(path) if follow else os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):  # the latter: a component is a file (/dev/null/x)
            return None
        return PathStat(found.st_uid, found.st_mode)

    async def uid(self) -> int:
        return os.getuid()

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write a new file under a random name beside ``path`` (created exclusively, never through a symlink),
        then rename it over ``path`` (atomic)."""
        temporary = f"{path}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

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
        """Remove ``path`` and everything under it, as ``rm -rf`` does (a missing one is no error; a symlink is
        removed, never followed); OSError says what could not be removed."""
        found = await self.lstat(path)
        if found is None:
            return
        if found.is_dir:
            shutil.rmtree(path)
        else:
            os.unlink(path)

    async def close(self) -> None:
        pass


def span_bounds(size: int, start: int, end: Optional[int], limit: int) -> tuple[int, int]:
    """The bytes to read of a file of ``size`` bytes for :meth:`Transport.read_span`: ``[begin, stop)``."""
    stop = max(0, size if end is None else min(end, size))
    return min(stop, max(start, stop - max(limit, 0), 0)), stop
