"""What happens before a cluster engine's first submission: :class:`Startup`.

It runs before any submission, so a bad interpreter, host, bucket or scheduler fails there with
:class:`~clustrix_futures.errors.ConfigError`: the run directory is made, the interpreter is probed (its Python
major.minor must equal ours, since cloudpickle needs that; with S3 storage it must import boto3), the worker's
code is staged into the run directory if that interpreter cannot import it, the scheduler's array limit is read
and the run's manifest written. Kubernetes has no interpreter to probe before a pod runs: the image must hold
the same Python major.minor, cloudpickle, boto3 and clustrix-futures. Attaching to an existing run reads its
manifest and batch records instead of making them.

What the probe and the array limit tell is the site's, not the run's: it is cached per site for a few minutes
(:mod:`~clustrix_futures.engine.sitecache`), so a new executor on a known site starts without those two round
trips; a failed start forgets the site's entry.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from clustrix_futures import __version__, config
from clustrix_futures.engine.records import Environment
from clustrix_futures.engine.sitecache import SiteCache, site_key
from clustrix_futures.engine.staging import stage
from clustrix_futures.errors import ConfigError
from clustrix_futures.remote.ownership import check_work_dir, host_dir_of, run_refusal
from clustrix_futures.remote.site import Site
from clustrix_futures.remote.storage import S3Storage, Storage
from clustrix_futures.remote.transport import Transport, TransportLost
from clustrix_futures.runfiles.layout import (
    CHECKPOINT_VARIABLE,
    ENDPOINT_VARIABLE,
    SUBDIRECTORIES,
    RunDir,
    is_s3,
    new_run_name,
)
from clustrix_futures.runfiles.records import encode_json, read_batches, read_manifest
from clustrix_futures.schedulers import capabilities, make_scheduler
from clustrix_futures.schedulers.base import BackendContext, Scheduler

log = logging.getLogger(__name__)

# One line (any login shell passes it on): Python major.minor; whether cloudpickle, boto3 and clustrix_futures
# import; the version of the latter.
_PROBE = ("import sys, importlib.util as u; print('%d.%d' % sys.version_info[:2]); "
          "print(bool(u.find_spec('cloudpickle')), bool(u.find_spec('boto3'))); "
          "print(__import__('clustrix_futures').__version__ if u.find_spec('clustrix_futures') else '-')")


@dataclass(frozen=True)
class Interpreter:
    """What :func:`probe_interpreter` found: ``version`` is None when the interpreter could not be run."""

    python: str
    version: Optional[str]
    cloudpickle: bool = False
    boto3: bool = False
    package_version: Optional[str] = None  # clustrix-futures there, if it has it
    failure: str = ""

    @property
    def needs_staging(self) -> bool:
        """Whether the worker's code (ours, and cloudpickle) must be copied into the run directory: the
        interpreter lacks it, or has another version of clustrix-futures, whose worker may not read our files."""
        return not self.cloudpickle or self.package_version != __version__


async def probe_interpreter(transport: Transport, python: str) -> Interpreter:
    """Run :data:`_PROBE`. Only its first line (the version) is required: a probe that fails after it (a broken
    clustrix-futures there, say) still tells the version, and what it did not tell counts as missing."""
    probe = await transport.run([python, "-c", _PROBE])
    lines = [line.strip() for line in probe.stdout.split("\n")] + ["", ""]
    if not re.fullmatch(r"\d+\.\d+", lines[0]):
        said = (probe.stderr.strip() or probe.stdout.strip()).replace("\n", " ")
        return Interpreter(python, None, failure=f"exit status {probe.returncode}" + (f": {said}" if said else ""))
    found = lines[1].split()
    return Interpreter(python, lines[0], found[:1] == ["True"], found[1:2] == ["True"],
                       lines[2] if lines[2] not in ("", "-") else None)


def interpreter_problem(found: Interpreter, where: str, s3: bool) -> Optional[tuple[str, str]]:
    """Why the workers cannot use this interpreter, and the fix; None if they can."""
    local = "{}.{}".format(*sys.version_info[:2])
    if found.version is None:
        return (f"the interpreter {found.python!r} cannot be run on {where}: {found.failure}",
                f"set the option 'python' to the absolute path of a Python {local} interpreter there")
    if found.version != local:
        return (f"{found.python!r} on {where} is Python {found.version}, but this client runs Python {local}; "
                f"cloudpickle needs the same version on both sides",
                f"set the option 'python' to a Python {local} interpreter there (e.g. python='/path/to/python{local}')")
    if s3 and not found.boto3:
        return (f"{found.python!r} on {where} cannot import boto3, which the workers of a run with S3 storage need",
                "install it there (pip install boto3)")
    return None


@dataclass
class Started:
    """What :meth:`Startup.start` opened and learned."""

    storage: Storage
    scheduler: Scheduler
    env: Environment
    adopted: list[dict[str, Any]] = field(default_factory=list)  # an attached run's batch records
    site_cache: Optional[SiteCache] = None  # where what was learned of the site is kept (None: not cached)


class Startup:
    """Starts a run on a connected :class:`~clustrix_futures.remote.site.Site` (see the module docstring)."""

    def __init__(self, site: Site, settings: config.Settings) -> None:
        self.site = site
        self.settings = settings
        self.transport: Transport = site.transport
        self.storage: Storage = site.transport
        self.cache: Optional[SiteCache] = None  # the site's cache entry, once the interpreter is known
        self._cached: Optional[dict[str, Any]] = None  # its facts, if they were fresh
        self._probed: Optional[Interpreter] = None  # what a probe found now (to be cached once all is known)

    async def start(self, attach_to: Optional[str]) -> Started:
        """A new run, or with ``attach_to`` an existing run directory taken over (options given now override
        those of its manifest)."""
        settings = self.settings
        self.storage = self.site.storage(attach_to or settings["storage"])
        existing: Optional[RunDir] = None
        manifest: dict[str, Any] = {}
        if attach_to:
            manifest, existing = await self._existing(attach_to)
        elif not capabilities(settings.backend).api:
            await check_work_dir(self.transport, await self.site.work_dir())
        s3, api = isinstance(self.storage, S3Storage), capabilities(settings.backend).api
        if capabilities(settings.backend).needs_s3 and not s3:
            raise ConfigError(f"the {settings.backend} backend needs S3 storage (its pods do not see this machine's "
                              f"files): set the option 'storage' to 's3://BUCKET/PREFIX'")
        python, staged = await self._interpreter(manifest.get("python"), s3, api)
        run_dir = existing or await self._make_run_dir(await self.site.work_dir(), new_run_name(), s3, api)
        context = BackendContext.of(settings, python, run_dir.host)
        scheduler = make_scheduler(settings, context, self.transport, run_dir.log)
        if staged:
            await self._stage_code(run_dir, python)
        max_array = await self._max_array_size(scheduler)
        if not attach_to:
            await self._write_manifest(run_dir, python, staged)
        log.info("run directory %s on %s", run_dir.root, self.site.where())
        adopted = await read_batches(self.storage, run_dir) if attach_to else []
        script_env = {ENDPOINT_VARIABLE: settings["endpoint_url"]} if s3 and settings["endpoint_url"] else {}
        if settings["signal_before_end"]:
            script_env[CHECKPOINT_VARIABLE] = "USR1"
        return Started(self.storage, scheduler, Environment(run_dir, python, staged, max_array, script_env), adopted,
                       self.cache)

    async def _interpreter(self, recorded: Optional[str], s3: bool, api: bool) -> tuple[str, bool]:
        """The workers' interpreter (the option, else the manifest's, else a default), and whether the
        worker's code must be staged for it; API schedulers' images are not probed."""
        settings = self.settings
        if api:
            return settings["python"] or recorded or "python3", False
        python = settings["python"] or recorded or (sys.executable if settings["host"] is None else "python3")
        found = await self._probe(python)
        problem = interpreter_problem(found, self.site.where(), s3)
        if problem is not None:
            self._probed = None
            if self.cache is not None:
                self.cache.forget()
            raise ConfigError("; ".join(problem))
        return python, found.needs_staging

    async def _probe(self, python: str) -> Interpreter:
        """The interpreter's facts: from the site cache while they are fresh (see
        :mod:`~clustrix_futures.engine.sitecache`), else probed."""
        self.cache = SiteCache(site_key(self.settings, python))
        self._cached = self.cache.load()
        if self._cached is not None:
            try:
                return Interpreter(**self._cached["interpreter"])
            except (KeyError, TypeError):
                self._cached = None
        found = await probe_interpreter(self.transport, python)
        self._probed = found if found.version is not None else None
        return found

    async def _max_array_size(self, scheduler: Scheduler) -> Optional[int]:
        """The scheduler's array limit, from the site cache or asked (then the facts are cached)."""
        cached = (self._cached or {}).get("max_array", False)
        if cached is None or (isinstance(cached, int) and not isinstance(cached, bool)):
            return cached
        max_array = await scheduler.max_array_size()
        if self.cache is not None and self._probed is not None:
            self.cache.save({"interpreter": dataclasses.asdict(self._probed), "max_array": max_array})
        return max_array

    async def _existing(self, root: str) -> tuple[dict[str, Any], RunDir]:
        """The manifest and run directory of the run to attach to, refused unless it is ours: a directory is
        checked before anything in it is read; an S3 run's ``WORK_DIR/NAME`` (work_dir as given now, else as
        its manifest recorded it) once its manifest is read. Never the manifest's ``host_dir``."""
        if not is_s3(root):
            await self._refuse_foreign(root, "")
        manifest = await self._read_manifest(root)
        work_dir = await self.site.work_dir()
        if is_s3(root):
            await self._refuse_foreign(root, work_dir)
        return manifest, RunDir(root, host_dir_of(root, work_dir) if is_s3(root) and manifest.get("host_dir") else None)

    async def _refuse_foreign(self, root: str, work_dir: str) -> None:
        """ConfigError if the run directory to attach to (or, for an S3 run, its directory under work_dir) is
        not ours: nothing of it is read then."""
        refusal = await run_refusal(self.transport, root, work_dir)
        if refusal:
            raise ConfigError(f"refusing to attach to {root} on {self.site.where()}: {refusal}; nothing of it "
                              f"was read")

    async def _make_run_dir(self, work_dir: str, name: str, s3: bool, api: bool) -> RunDir:
        """A new run's directories, each created exclusively: in the storage, and (for S3 runs of command
        schedulers) its scripts and logs under work_dir on the transport's filesystem."""
        host = None if api else posixpath.join(work_dir, name)
        if host is not None:
            await self._make_host_dir(work_dir, host, SUBDIRECTORIES if not s3 else ("batches", "logs"))
        if not s3:
            assert host is not None
            return RunDir(host)
        root = posixpath.join(self.settings["storage"], name)
        assert isinstance(self.storage, S3Storage)
        try:
            await self.storage.check(root)
        except Exception as exc:
            raise ConfigError(f"cannot use the S3 storage {self.settings['storage']}: {exc}; check the bucket, "
                              f"the credentials (boto3's chain) and 'endpoint_url'") from exc
        return RunDir(root, host)

    async def _make_host_dir(self, work_dir: str, host: str, subdirectories: tuple[str, ...]) -> None:
        """Make work_dir (checked again once it exists), then the run's directory and its subdirectories,
        each with mkdir: one that exists already (planted there) is an error, never reused. ConfigError naming
        work_dir if it cannot be made (work_dir is a file, or not writable)."""
        try:
            await self.transport.makedirs(work_dir)
            await check_work_dir(self.transport, work_dir)
            for sub in ("", *subdirectories):
                await self.transport.mkdir(posixpath.join(host, sub) if sub else host)
        except (TransportLost, ConfigError):
            raise
        except Exception as exc:  # OSError here, SFTPError over SSH
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise ConfigError(f"cannot make a run directory in work_dir {work_dir!r} on {self.site.where()}: "
                              f"{why} ({host}); set the option 'work_dir' to a directory you can write (it must "
                              f"not be a file)") from None

    async def _write_manifest(self, run_dir: RunDir, python: str, staged: bool) -> None:
        settings = self.settings
        await self.storage.write(run_dir.manifest, encode_json({
            "backend": settings.backend, "options": config.manifest_options(settings.options),
            "max_workers": settings.max_workers,
            "python": python, "staged": staged, "host_dir": run_dir.host_root, "client": socket.gethostname(),
            "pid": os.getpid(), "created": time.time()}))

    async def _read_manifest(self, root: str) -> dict[str, Any]:
        """Take the backend and options of the run being attached to; options given now override them."""
        manifest = await read_manifest(self.storage, root, self.site.where())
        config.adopt_manifest(self.settings, manifest, root)
        missing = config.missing_env(self.settings, manifest)
        if missing:
            raise ConfigError(f"the run {root} was started with the env variables {', '.join(missing)}, whose "
                              f"values its manifest does not record (secrets are not written to disk): pass "
                              f"them again, env={{...}}, when attaching")
        return manifest

    async def _stage_code(self, run_dir: RunDir, python: str) -> None:
        """Copy what the worker imports (:data:`~clustrix_futures.engine.staging.NODE_CLOSURE` and cloudpickle)."""
        await stage(self.transport, run_dir.code, python)
