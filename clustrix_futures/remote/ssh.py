"""Commands and files on a remote host over ONE SSH connection (asyncssh) that survives connection drops.

The :class:`~clustrix_futures.remote.transport.Transport` contract, over SSH:

* Everything travels over one connection: each command on a channel of it, every file through one SFTP
  client on it. Options are asyncssh's; ``~/.ssh/config`` fills whatever is unset, so ``host`` may be an
  alias there.
* Host keys are always verified: against the ``known_hosts`` option, else the SSH config's
  ``UserKnownHostsFile``, else ``~/.ssh/known_hosts`` (a config that disables checking is overridden).
  :meth:`SSHTransport.connect` turns an unknown or changed host key, refused authentication or an
  unreachable host into :class:`~clustrix_futures.errors.ConfigError` saying what to do.
* When the connection drops, an operation reconnects (one reconnect shared by all operations; pauses from
  0.5 s doubling to 10 s) and is retried, so a transient drop loses and fails nothing. After
  ``reconnect_give_up`` seconds without a connection it raises
  :class:`~clustrix_futures.remote.transport.TransportLost`, and so does every later operation.
* A command runs at most once even when the connection drops while it runs (so a retried ``sbatch`` never
  submits twice): see :data:`_WRAPPER`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import shlex
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional, TypeVar

import asyncssh

from clustrix_futures.config import Settings
from clustrix_futures.errors import ConfigError, HostKeyError
from clustrix_futures.remote.commandline import argv_line, command_line, encode
from clustrix_futures.remote.transport import Completed, PathStat, TransportLost, span_bounds

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_PAUSE, LONGEST_PAUSE = 0.5, 10.0
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 15, 4  # unless ~/.ssh/config sets ServerAliveInterval
PARALLEL_READS = 64  # files open at once in read_many (the server's open-handle limit is finite)
PARALLEL_COMMANDS = 8  # command channels open at once: OpenSSH allows 10 sessions per connection by default
JOURNALS = ".cache/clustrix-futures/ssh"  # under the remote home: one directory per connection
STALE_JOURNAL_DAYS = 7

# Errors that mean "the connection is gone" (ConnectionLost and the other disconnects, SFTP requests cut off,
# sockets reset, and a channel refused with OPEN_CONNECT_FAILED: "SSH connection closed"); any other asyncssh
# error counts too once the connection is closed. A channel the server refuses on a live connection
# (MaxSessions) is an ordinary error.
_LOST = (OSError, EOFError, asyncssh.DisconnectError, asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)

# Every command runs as ``sh -c _WRAPPER sh JOURNAL ID N ACK_1..ACK_N ARGV...``, built by
# :func:`~clustrix_futures.remote.commandline.command_line` (the words encoded, so no login shell, not even
# csh, can change them; the script holds no single quote, '!' or newline). It first removes the journals ACK_i of
# commands whose answer has arrived, then claims JOURNAL/ID with mkdir (atomic) and runs ARGV, keeping
# stdout, stderr and exit status there, and replays them. If the claim fails, an earlier attempt of the
# same command started and its answer was lost with the connection: the wrapper waits for that run to end
# (while its pid lives) and replays its outcome instead of running ARGV again. Only if that run died without
# an outcome (killed with its session) is the answer exit status 255 with a message: the command's effect
# is then unknown, but it never ran twice. (The pid check assumes the reconnection reaches the same machine;
# behind a round-robin alias with a shared home, such a retry answers 255 rather than running twice.)
_WRAPPER = (
    'j=$1 d=$1/$2 n=$3; shift 3; [ -d "$j" ] || (umask 077; mkdir -p -- "$j"); '
    'while [ "$n" -gt 0 ]; do rm -rf -- "$j/$1"; shift; n=$((n - 1)); done; '
    'if mkdir -- "$d" 2>/dev/null; then echo $$ >"$d/pid"; "$@" >"$d/out" 2>"$d/err"; '
    'echo $? >"$d/rc.new"; mv -f -- "$d/rc.new" "$d/rc"; '
    'elif [ -d "$d" ]; then i=0; until [ -e "$d/rc" ]; do p=$(cat -- "$d/pid" 2>/dev/null); '
    'if [ -n "$p" ]; then kill -0 "$p" 2>/dev/null || break; else i=$((i + 1)); [ "$i" -lt 100 ] || break; fi; '
    'sleep 0.1; done; '
    'else echo "clustrix-futures: cannot create $d" >&2; exit 255; fi; '
    'if [ -e "$d/rc" ]; then cat -- "$d/out"; cat -- "$d/err" >&2; exit "$(cat -- "$d/rc")"; fi; '
    'echo "clustrix-futures: the connection dropped while this command ran, and the command ended without '
    'recording its outcome (it may or may not have taken effect)" >&2; exit 255'
)


class SSHTransport:
    """A :class:`~clustrix_futures.remote.transport.Transport` to ``settings["host"]``; call :meth:`connect` first,
    on the event loop that will use it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._host: str = settings["host"]
        self._target = self._host if settings["port"] is None else f"{self._host}:{settings['port']}"
        self._options: dict[str, Any] = {}
        self._conn: Optional[asyncssh.SSHClientConnection] = None
        self._sftp: Optional[asyncssh.SFTPClient] = None
        self._generation = 0  # bumped by every (re)connection
        self._lock: Optional[asyncio.Lock] = None
        self._channels: Optional[asyncio.Semaphore] = None
        self._lost: Optional[TransportLost] = None
        self._ids = itertools.count()
        self._journal = ""
        self._acknowledged: list[str] = []  # journals of commands whose answer arrived, removed by the next one
        self._uid: Optional[int] = None

    # ------------------------------------------------------------ connecting

    async def connect(self) -> None:
        """Open the connection and its SFTP client; every failure is a ConfigError that says what to do."""
        self._lock, self._channels = asyncio.Lock(), asyncio.Semaphore(PARALLEL_COMMANDS)
        try:
            await self._resolve_options()
            await self._open()
        except asyncssh.HostKeyNotVerifiable as exc:
            host, _, port = self._target.rpartition(":")
            entry = host if port == "22" else f"[{host}]:{port}"
            raise HostKeyError(
                f"the SSH host key of {self._target} is not trusted: it is unknown, or it changed ({exc.reason}). "
                f"Host keys are always verified. If you expect this host, compare its key's fingerprint "
                f"(`ssh-keyscan -p {port} {host} | ssh-keygen -lf -`) with the one your administrators publish, "
                f"then accept it: `ssh-keyscan -p {port} {host} >> ~/.ssh/known_hosts` (for a changed key, first "
                f"`ssh-keygen -R '{entry}'`), or set the option 'known_hosts' to a file that lists it. "
                f"A key that changed unexpectedly can mean the connection is being intercepted."
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise ConfigError(
                f"SSH authentication to {self._target} failed ({exc.reason}): set the options 'username' and "
                f"'client_keys' (and 'passphrase' for an encrypted key), load the key into ssh-agent, or set "
                f"User/IdentityFile for the host in ~/.ssh/config") from exc
        except asyncssh.KeyImportError as exc:
            raise ConfigError(f"cannot load the SSH key for {self._target}: {exc} (check 'client_keys' and "
                              f"'passphrase')") from exc
        except asyncio.TimeoutError as exc:
            raise ConfigError(f"cannot connect to {self._target}: no answer within "
                              f"{self.settings['connect_timeout']:g} s (option 'connect_timeout')") from exc
        except (OSError, asyncssh.Error, ValueError) as exc:
            raise ConfigError(f"cannot connect to {self._target}: {exc or type(exc).__name__}; check 'host', "
                              f"'port' and ~/.ssh/config") from exc
        self._journal = f"{await self.home()}/{JOURNALS}/{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        stale = ["find", os.path.dirname(self._journal), "-mindepth", "1", "-maxdepth", "1", "-mtime",
                 f"+{STALE_JOURNAL_DAYS}", "-exec", "rm", "-rf", "--", "{}", "+"]
        with contextlib.suppress(OSError, asyncssh.Error):  # journals left by clients that crashed
            await self._conn_now().run(argv_line(stale), stdin=asyncssh.DEVNULL)

    async def _resolve_options(self) -> None:
        given = {"port": self.settings["port"], "username": self.settings["username"],
                 "client_keys": self.settings["client_keys"], "known_hosts": self.settings["known_hosts"],
                 "passphrase": self.settings["passphrase"], "connect_timeout": self.settings["connect_timeout"]}
        # Unset options are left out, not passed as None: asyncssh's defaults (``()``) are what let
        # ~/.ssh/config fill them, and ``known_hosts=None`` would mean "trust any host key".
        options = {name: value for name, value in given.items() if value is not None}
        resolved = await asyncssh.SSHClientConnectionOptions.construct(config=(), host=self._host, **options)
        if resolved.known_hosts is None:  # the SSH config said UserKnownHostsFile none: verify anyway
            options["known_hosts"] = []  # asyncssh: ~/.ssh/known_hosts
        if not resolved.keepalive_interval:  # detect a silently dead connection
            options.update(keepalive_interval=KEEPALIVE_INTERVAL, keepalive_count_max=KEEPALIVE_COUNT)
        self._options = options
        self._target = f"{resolved.host}:{resolved.port}"

    async def _open(self) -> None:
        conn = await asyncssh.connect(self._host, **self._options)
        try:
            sftp = await conn.start_sftp_client()
        except BaseException:
            conn.abort()
            raise
        old, self._conn, self._sftp = self._conn, conn, sftp
        self._generation += 1
        if old is not None:
            old.abort()

    async def _reconnect(self, generation: int, cause: BaseException) -> None:
        """Reconnect unless another operation already did since ``generation``; raise TransportLost after
        ``reconnect_give_up`` seconds of failures."""
        assert self._lock is not None, "connect() was not called"
        async with self._lock:
            if self._lost is not None:
                raise self._lost
            if self._generation != generation:
                return
            give_up = self.settings["reconnect_give_up"]
            log.warning("SSH connection to %s lost (%s); reconnecting for up to %g s", self._target,
                        cause or type(cause).__name__, give_up)
            deadline, pause = time.monotonic() + give_up, FIRST_PAUSE
            while True:
                try:
                    await asyncio.wait_for(self._open(), max(1.0, min(self.settings["connect_timeout"],
                                                                      deadline - time.monotonic())))
                    log.warning("SSH connection to %s restored", self._target)
                    return
                except asyncssh.HostKeyNotVerifiable as exc:  # never retried: it may be an attack
                    self._lost = TransportLost(f"the host key of {self._target} changed: {exc.reason}")
                except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
                    if time.monotonic() >= deadline:
                        self._lost = TransportLost(f"could not reconnect to {self._target} for {give_up:g} s: "
                                                   f"{exc or type(exc).__name__}")
                if self._lost is not None:
                    raise self._lost
                await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
                pause = min(pause * 2, LONGEST_PAUSE)

    async def _retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` until it completes, reconnecting whenever the connection is lost."""
        while True:
            if self._lost is not None:
                raise self._lost
            generation = self._generation
            try:
                return await operation()
            except Exception as exc:
                if not self._is_lost(exc):
                    raise
                await self._reconnect(generation, exc)

    def _is_lost(self, exc: Exception) -> bool:
        if isinstance(exc, _LOST) or (isinstance(exc, asyncssh.ChannelOpenError)
                                      and exc.code == asyncssh.OPEN_CONNECT_FAILED):
            return True
        return isinstance(exc, asyncssh.Error) and (self._conn is None or self._conn.is_closed())

    def _conn_now(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            raise asyncssh.ConnectionLost("not connected")
        return self._conn

    def _sftp_now(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            raise asyncssh.SFTPNoConnection("not connected")
        return self._sftp

    # ------------------------------------------------------------ the Transport protocol

    async def run(self, argv: Sequence[str], input: Optional[bytes] = None) -> Completed:
        """Run ``argv`` once, through :data:`_WRAPPER`, and return its outcome. Every word reaches the command
        intact whatever the login shell (ValueError for a NUL in a word, which no argument can hold)."""
        for word in argv:
            encode(word)  # a NUL is refused before anything runs
        command_id = str(next(self._ids))
        stdin: dict[str, Any] = {"input": input} if input else {"stdin": asyncssh.DEVNULL}

        async def attempt() -> Completed:
            acknowledged, self._acknowledged = self._acknowledged, []
            command = command_line(_WRAPPER, [self._journal, command_id, str(len(acknowledged)), *acknowledged,
                                              *argv])
            assert self._channels is not None, "connect() was not called"
            try:
                async with self._channels:
                    result = await self._conn_now().run(command, encoding=None, **stdin)
            except BaseException:
                self._acknowledged.extend(acknowledged)
                raise
            if result.exit_status is None and result.exit_signal is None:  # the session ended with the connection
                self._acknowledged.extend(acknowledged)
                raise asyncssh.ConnectionLost(f"`{shlex.join(argv)}` got no answer")
            self._acknowledged.append(command_id)
            out, err = (data if isinstance(data, bytes) else b"" for data in (result.stdout, result.stderr))
            return Completed(argv, result.returncode if result.returncode is not None else 255,
                             out.decode(errors="replace"), err.decode(errors="replace"))

        return await self._retry(attempt)

    async def home(self) -> str:
        return await self._retry(lambda: self._sftp_now().realpath("."))

    async def makedirs(self, path: str) -> None:
        attrs = asyncssh.SFTPAttrs(permissions=0o700)
        await self._retry(lambda: self._sftp_now().makedirs(path, attrs, exist_ok=True))

    async def mkdir(self, path: str) -> None:
        """Create ``path`` (mode 0700); an SFTP error if anything is there already."""
        attrs = asyncssh.SFTPAttrs(permissions=0o700)
        await self._retry(lambda: self._sftp_now().mkdir(path, attrs))

    async def lstat(self, path: str, follow: bool = False) -> Optional[PathStat]:
        """The owner and mode of ``path`` over SFTP (of a final symlink's target with ``follow``); None if missing."""
        async def attempt() -> Optional[PathStat]:
            sftp = self._sftp_now()
            try:
                attrs = await (sftp.stat(path) if follow else sftp.lstat(path))
            except asyncssh.SFTPNoSuchFile:
                return None
            return PathStat(int(attrs.uid or 0), int(attrs.permissions or 0))

        return await self._retry(attempt)

    async def uid(self) -> int:
        """The remote user's uid (``id -u`` there, asked once)."""
        if self._uid is None:
            answer = await self.run(["id", "-u"])
            if not answer.ok or not answer.stdout.strip().isdigit():
                raise ConfigError(f"cannot tell the user id on {self._target}: {answer.describe()}")
            self._uid = int(answer.stdout.strip())
        return self._uid

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write a new file under a random name beside ``path`` (created exclusively: ``FXF_CREAT|FXF_EXCL``),
        chmod, then rename over ``path`` (atomic)."""
        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL

        async def attempt() -> None:
            temporary = f"{path}.{secrets.token_hex(8)}.tmp"  # a new name per attempt: EXCL refuses a used one
            sftp = self._sftp_now()
            async with sftp.open(temporary, flags, asyncssh.SFTPAttrs(permissions=mode), encoding=None) as target:
                await target.write(data)
            await sftp.chmod(temporary, mode)
            await sftp.posix_rename(temporary, path)

        await self._retry(attempt)

    async def read_many(self, paths: Sequence[str]) -> dict[str, Optional[bytes]]:
        """Every file's content (None where it does not exist), fetched concurrently."""
        limit = asyncio.Semaphore(PARALLEL_READS)

        async def read(sftp: asyncssh.SFTPClient, path: str) -> Optional[bytes]:
            async with limit:
                try:
                    async with sftp.open(path, "rb") as source:
                        data = await source.read()
                except asyncssh.SFTPNoSuchFile:
                    return None
                return data if isinstance(data, bytes) else data.encode()

        async def attempt() -> dict[str, Optional[bytes]]:
            sftp = self._sftp_now()
            outcomes = await asyncio.gather(*(read(sftp, path) for path in paths), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            return dict(zip(paths, outcomes))  # type: ignore[arg-type]

        return await self._retry(attempt)

    async def read_span(self, path: str, start: int, end: Optional[int], limit: int) -> Optional[bytes]:
        """Open, stat, read only the bytes wanted (an offset read): no more crosses the wire."""
        async def attempt() -> Optional[bytes]:
            try:
                async with self._sftp_now().open(path, "rb") as source:
                    begin, stop = span_bounds((await source.stat()).size or 0, start, end, limit)
                    data = await source.read(stop - begin, begin) if stop > begin else b""
            except asyncssh.SFTPNoSuchFile:
                return None
            return data if isinstance(data, bytes) else data.encode()

        return await self._retry(attempt)

    async def listdir(self, path: str) -> list[str]:
        async def attempt() -> list[str]:
            try:
                names = await self._sftp_now().listdir(path)
            except asyncssh.SFTPNoSuchFile:
                return []
            return [str(name) for name in names if name not in (".", "..")]

        return await self._retry(attempt)

    async def remove_tree(self, path: str) -> None:
        """``rm -rf -- path`` there; OSError with its message if it failed."""
        answer = await self.run(["rm", "-rf", "--", path])
        if not answer.ok:
            raise OSError(f"cannot remove {path} on {self._target}: {answer.describe()}")

    async def close(self) -> None:
        """Remove this connection's journals and close it; best effort, never reconnects."""
        conn, self._conn, self._sftp = self._conn, None, None
        self._lost = self._lost or TransportLost("the transport is closed")
        if conn is None:
            return
        try:
            if self._journal:
                await asyncio.wait_for(conn.run(argv_line(["rm", "-rf", "--", self._journal]),
                                                stdin=asyncssh.DEVNULL), 10)
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
            log.debug("could not remove %s on %s: %s", self._journal, self._target, exc)
        conn.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError, asyncssh.Error):
            await asyncio.wait_for(conn.wait_closed(), 5)
