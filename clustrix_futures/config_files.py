"""Configuration files: which are read, and which are trusted enough to be read.

A configuration file decides what runs (``setup`` lines, ``python``) and where pickles go (``host``,
``known_hosts``), so it is read only when it is the user's own:

* every file is refused (:class:`~clustrix_futures.errors.ConfigError` naming it) unless it is owned by the
  current user and not writable by group or others; one that cannot be read, is not UTF-8 or is not a
  ``profiles:`` mapping is refused the same way;
* ``./clustrix-futures.yaml`` in the current directory (a shared project directory, a cloned repository) is
  read only once trusted: named by ``$CLUSTRIX_FUTURES_CONFIG``, or approved with ``clustrix-futures trust
  FILE``, which records the SHA-256 of its content (as direnv's ``allow`` does) in :func:`trust_store`. A file
  changed since is untrusted again. The store is ``trusted.json`` in the user's configuration directory (0600,
  in a 0700 directory), keyed by the file's real path.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Optional

from clustrix_futures.errors import ConfigError

CONFIG_ENV = "CLUSTRIX_FUTURES_CONFIG"
LOCAL_CONFIG = "clustrix-futures.yaml"  # in the current directory: read only once trusted


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/clustrix-futures``, else ``~/.config/clustrix-futures``."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "clustrix-futures"


def config_files() -> list[Path]:
    """Where profiles are read from, in order of precedence: ``$CLUSTRIX_FUTURES_CONFIG`` alone if set, else
    ``./clustrix-futures.yaml`` (once trusted) and the user's ``config.yaml``."""
    if os.environ.get(CONFIG_ENV):
        return [Path(os.environ[CONFIG_ENV])]
    return [Path(LOCAL_CONFIG), config_dir() / "config.yaml"]


def trust_store() -> Path:
    return config_dir() / "trusted.json"


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_owner(path: Path, info: os.stat_result) -> None:
    """Refuse a file (or directory) another account owns or can write."""
    if info.st_uid != os.getuid():
        raise ConfigError(f"refusing the configuration file {path}: it is owned by {_owner(info.st_uid)}, not by "
                          f"you ({_owner(os.getuid())}), so its owner decides what your runs execute. If you "
                          f"trust its content, copy it to a file of your own (e.g. {config_dir() / 'config.yaml'})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"refusing the configuration file {path}: it is writable by group or others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}), so they decide what your runs execute; fix it with "
                          f"`chmod go-w {path}`")


def read_owned(path: Path) -> Optional[bytes]:
    """The bytes of the file ``path`` if it is ours (:func:`check_owner`); None if there is no such file."""
    path = Path(os.path.abspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"the configuration file {path} is not a regular file")
    with os.fdopen(fd, "rb") as source:
        check_owner(path, info)
        try:
            return source.read()
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror or exc}") from None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _trusted() -> dict[str, str]:
    """The approved files: real path -> SHA-256. A store another account could write is refused."""
    data = read_owned(trust_store())
    if data is None:
        return {}
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
        raise ConfigError(f"the trust store {trust_store()} is corrupt: delete it and approve the files again "
                          f"with `clustrix-futures trust FILE`")
    return document


def require_trust(path: Path, data: bytes) -> None:
    """Refuse ``./clustrix-futures.yaml`` unless this content of it was approved (see the module docstring)."""
    real = os.path.realpath(path)
    recorded = _trusted().get(real)
    if recorded == digest(data):
        return
    state = "has changed since it was approved" if recorded else "has not been approved"
    raise ConfigError(f"refusing the configuration file {real} in the current directory: it {state}, and a "
                      f"file there (a shared directory, a cloned repository) can make your runs execute anything. "
                      f"Read it, then approve it with `clustrix-futures trust {real}`, or name it with "
                      f"{CONFIG_ENV}={real}")


def approve(path: Path) -> str:
    """Record the SHA-256 of ``path``'s current content as trusted (the file must be ours); return it."""
    data = read_owned(path)
    if data is None:
        raise ConfigError(f"cannot approve {path}: there is no such file")
    directory = trust_store().parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_owner(directory, os.stat(directory))
    os.chmod(directory, 0o700)
    entries = _trusted()
    entries[os.path.realpath(path)] = digest(data)
    _write_private(trust_store(), json.dumps(entries, indent=1, sort_keys=True).encode())
    return entries[os.path.realpath(path)]


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file (a random temporary name, created exclusively)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def parse(path: Path, data: bytes) -> dict[str, Any]:
    """The ``profiles`` of a configuration file's content, by name; ConfigError naming the file otherwise."""
    import yaml

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the configuration file {path} is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})") from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or set(document) - {"profiles"}:
        extra = set(document) - {"profiles"} if isinstance(document, dict) else document
        raise ConfigError(f"{path}: unknown top-level key(s) {extra!r}; the file holds 'profiles:'")
    profiles = document.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must map profile names to their options (profiles: NAME: "
                          f"OPTION: VALUE), not a {type(profiles).__name__}")
    for name, body in profiles.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: profile {name!r} must be a mapping of options")
    return {str(name): body for name, body in profiles.items()}


def load_profiles() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every profile defined in :func:`config_files`, by name: the file that defines it first, and its options.

    Each file is read only if it is ours (and ``./clustrix-futures.yaml`` only once trusted); the options are
    not validated here (:func:`clustrix_futures.config.resolve` does).
    """
    profiles: dict[str, tuple[Path, dict[str, Any]]] = {}
    named = bool(os.environ.get(CONFIG_ENV))
    for path in config_files():
        data = read_owned(path)
        if data is None:
            continue
        if not named and path == Path(LOCAL_CONFIG):
            require_trust(path, data)
        for name, body in parse(path, data).items():
            profiles.setdefault(name, (path, body))
    return profiles
