"""One cluster, as this machine reaches it: :class:`Site`.

A site is the transport (this machine's processes and filesystem, or one SSH connection with ``host``) and
the storages opened through it (the transport's own filesystem, or S3 for an ``s3://`` location), with the
two facts every user of a cluster needs: where it is (for messages) and where ``~`` leads there. The cluster
engine, ``clustrix-futures doctor`` and the run tools (``status``, ``logs``, ``cancel``, ``clean``) all
connect through it.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Optional, TypeVar

from clustrix_futures import config
from clustrix_futures.errors import ConfigError
from clustrix_futures.remote.storage import S3Storage, Storage
from clustrix_futures.remote.transport import LocalTransport, Transport
from clustrix_futures.runfiles.layout import is_s3

SiteT = TypeVar("SiteT", bound="Site")


def make_transport(settings: config.Settings) -> Transport:
    """This machine's transport, or (with the option ``host``) an SSH transport, not yet connected."""
    if settings["host"] is None:
        return LocalTransport()
    from clustrix_futures.remote.ssh import SSHTransport

    return SSHTransport(settings)


class Site:
    """The transport (and storages) of one cluster, open from :meth:`connect` (or ``async with``) to :meth:`close`."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.transport: Transport = make_transport(settings)
        self._storages: list[S3Storage] = []

    async def connect(self) -> None:
        """Open the SSH connection, if there is a host: ConfigError (HostKeyError for the host key) says why not."""
        connect = getattr(self.transport, "connect", None)
        if connect is not None:
            await connect()

    async def close(self) -> None:
        """Close the S3 storages opened through :meth:`storage`, then the transport."""
        for storage in self._storages:
            await storage.close()
        await self.transport.close()

    async def __aenter__(self: SiteT) -> SiteT:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def where(self) -> str:
        """The site's name in messages: its host, or "this machine"."""
        return self.settings["host"] or "this machine"

    def storage(self, location: Optional[str]) -> Storage:
        """The storage of a run at ``location``: S3 for an ``s3://`` location (closed with the site), otherwise
        the transport's own filesystem."""
        if not is_s3(location):
            return self.transport
        storage = S3Storage(self.settings["endpoint_url"])
        self._storages.append(storage)
        return storage

    async def expand(self, path: str) -> str:
        """``path`` with a leading ``~`` (``~/...``) replaced by the home directory there, and a leading
        ``~user`` by that user's home there (``getent passwd``); ConfigError for a user that does not exist."""
        if not path.startswith("~"):
            return path
        user, slash, rest = path[1:].partition("/")
        if not user:
            return (await self.transport.home()) + slash + rest
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", user):
            raise ConfigError(f"cannot expand {path!r}: {user!r} is not a user name")
        found = await self.transport.run(["getent", "passwd", user])
        fields = found.stdout.strip().split(":")
        if not found.ok or len(fields) < 7 or not fields[5].startswith("/"):
            raise ConfigError(f"cannot expand {path!r}: there is no user {user!r} on {self.where()}")
        return posixpath.join(fields[5], rest) if rest else fields[5]

    async def work_dir(self) -> str:
        """The option ``work_dir``, ``~`` expanded: where run directories are made."""
        return await self.expand(self.settings["work_dir"])

    async def locate(self, run: str) -> str:
        """A run directory from its path, or from its name under ``work_dir`` (or under ``storage`` for S3)."""
        if is_s3(run) or run.startswith("/"):
            return run
        if run.startswith("~"):
            return await self.expand(run)
        if is_s3(self.settings["storage"]):
            return posixpath.join(self.settings["storage"], run)
        return posixpath.join(await self.work_dir(), run)
