"""What a start-up learned of a site, kept for a few minutes: :class:`SiteCache`.

Every new executor on a command scheduler asks the same questions before its first submission: what the
workers' interpreter is (its Python version, whether it has cloudpickle, boto3 and which clustrix-futures:
``engine.startup.probe_interpreter``) and the scheduler's array limit (``scontrol show config`` on SLURM). The
answers are the site's, not the run's, so they are cached per *site*: the host (and port), the user, the backend,
the interpreter as named, ``work_dir``, this client's own version and Python, and, on this machine, the
``PATH`` and ``PYTHONPATH`` that decide what the interpreter finds. A new executor on a known site then submits
without those round trips.

The cache is safe to be wrong for a short while only: an entry expires after :data:`EXPIRY_SECONDS`
(``$CLUSTRIX_FUTURES_SITE_CACHE_SECONDS`` overrides it; 0 disables the cache), and the engine forgets its site's
entry (:meth:`SiteCache.forget`) on any failure that may mean the answers changed (an element that ended
without its results, a refused submission, a failed start), so the next executor asks again.

Entries are trusted only if they are ours: one file per site, named by the SHA-256 of its key, in
``$XDG_CACHE_HOME/clustrix-futures/sites`` (else ``~/.cache/...``), the directory 0700 and each file 0600, owned
by this user and writable by nobody else; a file or directory that is not so is ignored (and never written
through), as is one that does not parse, names another key, or was saved in the future. Files are written
atomically (a private temporary file, renamed over the old one), so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from clustrix_futures import __version__, config

log = logging.getLogger(__name__)

EXPIRY_SECONDS = 300.0
EXPIRY_ENV = "CLUSTRIX_FUTURES_SITE_CACHE_SECONDS"
PRIVATE = stat.S_IRWXG | stat.S_IRWXO


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/clustrix-futures/sites``, else ``~/.cache/clustrix-futures/sites``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clustrix-futures" / "sites"


def expiry() -> float:
    """How long an entry lives, in seconds (0: the cache is off)."""
    try:
        return max(0.0, float(os.environ.get(EXPIRY_ENV, EXPIRY_SECONDS)))
    except ValueError:
        return EXPIRY_SECONDS


def site_key(settings: config.Settings, python: str) -> dict[str, Any]:
    """What names a site: an entry is used only for exactly this key."""
    local = settings["host"] is None
    return {"host": settings["host"], "port": settings["port"], "user": settings["username"] or getpass.getuser(),
            "backend": settings.backend, "python": python, "work_dir": settings["work_dir"],
            "client": [__version__, "{}.{}".format(*sys.version_info[:2])],
            "env": [os.environ.get("PATH", ""), os.environ.get("PYTHONPATH", "")] if local else None}


def _ours(info: os.stat_result, directory: bool) -> bool:
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    return kind and info.st_uid == os.getuid() and not info.st_mode & PRIVATE


class SiteCache:
    """The cached facts of one site (see the module docstring); every method is quiet: a cache that cannot be
    read or written is a cache miss, logged at debug level, never an error of the executor."""

    def __init__(self, key: dict[str, Any]) -> None:
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        self.path = cache_dir() / f"{digest}.json"

    def load(self) -> Optional[dict[str, Any]]:
        """The facts saved for this key, if they are ours, fresh and well formed; else None."""
        lifetime = expiry()
        if not lifetime or not self._directory_ours(create=False):
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as source:
            if not _ours(os.fstat(fd), directory=False):
                log.warning("ignoring the site cache file %s: it is not a private file of yours", self.path)
                return None
            data = source.read()
        try:
            entry = json.loads(data)
            saved, facts = float(entry["saved"]), entry["facts"]
            fresh = entry["key"] == self.key and time.time() - lifetime < saved <= time.time() + 1
        except (ValueError, KeyError, TypeError):
            return None
        return facts if fresh and isinstance(facts, dict) else None

    def save(self, facts: dict[str, Any]) -> None:
        """Record ``facts`` (JSON values) for this key, atomically."""
        if not expiry() or not self._directory_ours(create=True):
            return
        document = json.dumps({"key": self.key, "saved": time.time(), "facts": facts}).encode()
        try:
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".site-")  # 0600, created exclusively
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(document)
                os.replace(temporary, self.path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:
            log.debug("could not write the site cache %s: %s", self.path, exc)

    def forget(self) -> None:
        """Drop this key's entry (the next start-up asks the site again)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _directory_ours(self, create: bool) -> bool:
        directory = self.path.parent
        try:
            if create:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(directory)
        except OSError:
            return False
        if not _ours(info, directory=True):
            log.warning("ignoring the site cache in %s: it is not a private directory of yours (mode 0700)",
                        directory)
            return False
        return True
