"""Whose a path is, before anything in it is trusted: run directories and ``work_dir``.

Run directories live where other people can write too (a group ``work_dir``, a login node's ``/tmp``). What a
run directory holds (its manifest, its batch records, its result journals) decides which commands run and what
is unpickled, so a run is acted on only if it is ours: :func:`run_refusal` says why one is not (it is not a
directory, it is a symlink, someone else owns it, or others can write to it). Nothing in a refused run is read.

:func:`check_work_dir` guards where new runs are made: every existing component of ``work_dir`` must be owned
by root or by the user; a component that group or others can write must be sticky (``/tmp``), and the one
after it must then be the user's own (so ``/tmp/me/cf`` and a group project directory with a per-user
subdirectory are fine); ``work_dir`` itself must not be writable by others. Otherwise another account could
swap or replace what we create there. The checks stat over the transport (SFTP ``lstat`` on a remote host).

On S3 nothing can be checked this way: a bucket has no owner per object. The prefix named by ``storage``
must be one only you can write (docs/security.md).
"""

from __future__ import annotations

import posixpath
import stat
from typing import Optional, Protocol

from clustrix_futures.errors import ConfigError
from clustrix_futures.remote.transport import PathStat
from clustrix_futures.runfiles.layout import is_s3

SHARED = stat.S_IWGRP | stat.S_IWOTH


class Stats(Protocol):
    """What the checks need of a transport."""

    async def lstat(self, path: str, follow: bool = False) -> Optional[PathStat]: ...

    async def uid(self) -> int: ...


def foreign(found: Optional[PathStat], uid: int) -> Optional[str]:
    """Why a run directory with this stat is not ours ("" never: None when it is ours)."""
    if found is None:
        return "it does not exist"
    if found.is_link:
        return "it is a symlink"
    if not found.is_dir:
        return "it is not a directory"
    if found.uid != uid:
        return f"it is owned by uid {found.uid}, not by you (uid {uid})"
    if found.mode & SHARED:
        return f"others can write to it (mode {stat.S_IMODE(found.mode):04o})"
    return None


def host_dir_of(root: str, work_dir: str) -> str:
    """Where the run ``root`` (a directory, or an S3 run's prefix) keeps its scripts and logs: ``WORK_DIR/NAME``,
    always computed here (never a path read from the run's own files, which may point anywhere)."""
    return posixpath.join(work_dir, posixpath.basename(root.rstrip("/")))


async def run_refusal(transport: Stats, root: str, work_dir: str) -> Optional[str]:
    """Why the run ``root`` must not be opened, or None when it is ours. For an S3 run, its directory under
    work_dir is checked if it has one (an API scheduler's has none: the prefix is trusted, see above)."""
    where = host_dir_of(root, work_dir) if is_s3(root) else root
    found = await transport.lstat(where)
    if found is None and is_s3(root):
        return None
    problem = foreign(found, await transport.uid())
    return None if problem is None else f"{where} is not your run directory: {problem}"


async def check_work_dir(transport: Stats, work_dir: str) -> None:
    """ConfigError naming the first component of ``work_dir`` (an absolute path) that another account could
    tamper with, and the fix; components that do not exist yet are not checked (they will be ours)."""
    uid = await transport.uid()
    parts = [p for p in posixpath.normpath(work_dir).split("/") if p]
    shared_parent = ""
    for depth in range(len(parts) + 1):
        path = "/" + "/".join(parts[:depth])
        found = await transport.lstat(path)
        if found is None:
            return
        if found.is_link:
            _refuse_link(found, uid, path, work_dir)
            found = await transport.lstat(path, follow=True)
            if found is None:
                return
        problem = _component_problem(found, uid, path, shared_parent, depth == len(parts))
        if problem:
            raise ConfigError(f"work_dir {work_dir} is not safe: {path} {problem}")
        shared_parent = path if found.mode & SHARED else ""


def _refuse_link(found: PathStat, uid: int, path: str, work_dir: str) -> None:
    if found.uid not in (0, uid):
        raise ConfigError(f"work_dir {work_dir} is not safe: {path} is a symlink owned by uid {found.uid}, who "
                          f"can point it elsewhere; set work_dir to a path without it")


def _component_problem(found: PathStat, uid: int, path: str, shared_parent: str, last: bool) -> str:
    """What is wrong with one component ("" if nothing), given the shared directory just above it, if any."""
    mode = stat.S_IMODE(found.mode)
    if not found.is_dir:
        return "is not a directory; set work_dir to a directory"
    if shared_parent and found.uid != uid:
        return (f"is owned by uid {found.uid} inside the shared directory {shared_parent}, so its owner can "
                f"replace what is under it; use a directory of your own there (e.g. {shared_parent}/$USER)")
    if found.uid not in (0, uid):
        return (f"is owned by uid {found.uid}, neither root nor you (uid {uid}), who can replace what is under it; "
                f"set work_dir to a directory of your own")
    if not found.mode & SHARED:
        return ""
    if last:
        return (f"can be written by others (mode {mode:04o}); use a subdirectory of your own, mode 0700 "
                f"in it (e.g. {posixpath.join(path, '$USER')})")
    if not found.mode & stat.S_ISVTX:
        return (f"can be written by others (mode {mode:04o}) and is not sticky, so anyone can rename or replace "
                f"what is in it; ask its owner to `chmod +t` it, or set work_dir elsewhere")
    return ""
