"""``clustrix-futures doctor``: why a profile does or does not work, one check at a time, each failure with its fix.

The checks run in the order the executor depends on them, and a check whose prerequisite failed is skipped:

1. config: the profile and options resolve;
2. ssh: the connection opens; a host key that is unknown or changed is its own failure (``HostKeyError``);
3. python: the interpreter runs there, with this client's Python major.minor (and boto3 for S3 storage);
4. scheduler: its commands are on the PATH there and it answers (for Kubernetes: the API lists Jobs);
5. work_dir: a file can be written there, and removed (for S3 storage: the bucket can be listed); no probe is left;
6. resources: SLURM accepts the profile's resources (``sbatch --test-only``: partition, account, time...);
7. test-job: one tiny task runs through a real executor, timed from submit to result.
"""

from __future__ import annotations

import asyncio
import os
import platform
import posixpath
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

from clustrix_futures import config
from clustrix_futures.engine.startup import interpreter_problem, probe_interpreter
from clustrix_futures.engine.submission import resources_of
from clustrix_futures.errors import ConfigError, HostKeyError
from clustrix_futures.remote.site import Site
from clustrix_futures.remote.storage import S3Storage
from clustrix_futures.runfiles.layout import is_s3
from clustrix_futures.schedulers import capabilities, make_scheduler
from clustrix_futures.schedulers.base import ArraySubmission, BackendContext
from clustrix_futures.schedulers.command import CommandScheduler
from clustrix_futures.schedulers.slurm import SlurmBackend

PASS, FAIL, SKIP = "ok", "FAIL", "skipped"


@dataclass
class Check:
    name: str
    result: str
    detail: str
    fix: str = ""


class Doctor:
    def __init__(self, profile: Optional[str], backend: Optional[str], options: dict[str, Any],
                 job_timeout: float) -> None:
        self.profile, self.backend, self.options = profile, backend, options
        self.job_timeout = job_timeout
        self.checks: list[Check] = []
        self.settings: Optional[config.Settings] = None

    @property
    def healthy(self) -> bool:
        return all(check.result != FAIL for check in self.checks)

    def add(self, name: str, result: str, detail: str, fix: str = "") -> bool:
        self.checks.append(Check(name, result, " ".join(detail.split()), fix))
        return result == PASS

    def skip_rest(self, names: list[str], because: str) -> None:
        for name in names:
            if name not in {c.name for c in self.checks}:
                self.add(name, SKIP, f"needs {because}")

    def run(self) -> list[Check]:
        names = ["config", "ssh", "python", "scheduler", "work_dir", "resources", "test-job"]
        try:
            self.settings = config.resolve(self.profile, self.backend, None, self.options)
        except (ConfigError, ValueError) as exc:
            self.add("config", FAIL, str(exc), "fix the profile or the options named above")
            self.skip_rest(names, "a valid configuration")
            return self.checks
        self.add("config", PASS, self._describe_config())
        if self.settings.backend == "local":
            self.skip_rest(names[1:-1], "a cluster backend (this configuration runs on local processes)")
        elif not asyncio.run(self._site_checks(self.settings)):
            self.skip_rest(names, "the checks above")
            return self.checks
        self._test_job(self.settings)
        return self.checks

    def _describe_config(self) -> str:
        assert self.settings is not None
        profile = self.profile or os.environ.get(config.PROFILE_ENV)
        source = f"profile {profile}" if profile else "options"
        where = self.settings["host"] or "this machine"
        return f"{source}: backend {self.settings.backend} on {where}"

    async def _site_checks(self, settings: config.Settings) -> bool:
        """Checks 2-6, over one connection; False when one failed (the rest would only repeat it)."""
        site = Site(settings)
        if settings["host"] is None:
            self.add("ssh", SKIP, "no 'host': commands run on this machine")
        else:
            started = time.perf_counter()
            try:
                await site.connect()
            except HostKeyError as exc:
                return self.add("ssh", FAIL, f"host key of {settings['host']} not trusted", str(exc))
            except ConfigError as exc:
                return self.add("ssh", FAIL, f"cannot connect to {settings['host']}", str(exc))
            self.add("ssh", PASS, f"connected to {settings['host']} in {time.perf_counter() - started:.2f} s")
        try:
            return (await self._python(site) and await self._scheduler(site) and await self._work_dir(site)
                    and await self._resources(site))
        finally:
            await site.close()

    async def _python(self, site: Site) -> bool:
        settings = site.settings
        if capabilities(settings.backend).api:
            return self.add("python", SKIP, "the image's interpreter is known only when a pod runs (see the test "
                            "job)")
        python = settings["python"] or (sys.executable if settings["host"] is None else "python3")
        found = await probe_interpreter(site.transport, python)
        problem = interpreter_problem(found, site.where(), is_s3(settings["storage"]))
        if problem is not None:
            return self.add("python", FAIL, problem[0], problem[1])
        package = (f"clustrix-futures {found.package_version} there" if found.package_version
                   else "clustrix-futures not installed there")
        staging = "; its worker code is copied into each run" if found.needs_staging else ""
        return self.add("python", PASS, f"{python}: Python {found.version}, {package}{staging}")

    async def _scheduler(self, site: Site) -> bool:
        settings = site.settings
        context = BackendContext.of(settings, settings["python"] or "python3", "/")
        scheduler = make_scheduler(settings, context, site.transport, lambda batch, index, stream: "")
        if isinstance(scheduler, CommandScheduler):
            backend = scheduler.backend
            job = ArraySubmission(0, 1, "/x", "/x", "/x", None, {})
            commands = sorted({backend.submit_argv(job, "/x")[0], backend.status_argv(["1"])[0],
                               backend.cancel_argv([("1", 0)])[0], backend.final_argv("1")[0]})
            missing = (await site.transport.run(["sh", "-c", 'for c; do command -v "$c" >/dev/null || echo "$c"; '
                                                 'done', "sh", *commands])).stdout.split()
            if missing:
                return self.add("scheduler", FAIL, f"not found on {site.where()}: {', '.join(missing)}",
                                f"check that backend {settings.backend!r} is the scheduler there, and that its "
                                f"commands are on the PATH of a non-interactive login (or add 'module load' lines "
                                f"to your shell's startup file)")
        try:
            largest = await scheduler.max_array_size()
        except ConfigError as exc:
            return self.add("scheduler", FAIL, str(exc), "check the scheduler's connection settings")
        if largest is None and capabilities(settings.backend).states_array_limit:
            return self.add("scheduler", FAIL, f"the {settings.backend} controller did not answer on {site.where()}",
                            "run the scheduler's own status command there; it may be down or unreachable")
        limit = f", arrays up to {largest} elements" if largest else ""
        return self.add("scheduler", PASS, f"{settings.backend} answers{limit}")

    async def _work_dir(self, site: Site) -> bool:
        settings = site.settings
        probe_name = f".doctor-{secrets.token_hex(4)}"
        if is_s3(settings["storage"]):
            storage = S3Storage(settings["endpoint_url"])
            try:
                await storage.check(posixpath.join(settings["storage"], probe_name))
            except Exception as exc:
                return self.add("work_dir", FAIL, f"cannot write to {settings['storage']}: {exc}",
                                "check the bucket, boto3's credentials and 'endpoint_url'")
            finally:
                await storage.close()
            if capabilities(settings.backend).api:
                return self.add("work_dir", PASS, f"{settings['storage']} is writable")
        work_dir = await site.work_dir()
        probe = posixpath.join(work_dir, probe_name)
        try:
            await site.transport.makedirs(probe)
            await site.transport.write(posixpath.join(probe, "probe"), b"")
        except Exception as exc:
            await self._remove_probe(site, probe)  # a probe left behind is a FAIL of its own
            return self.add("work_dir", FAIL, f"{work_dir} is not writable on {site.where()}: {exc}",
                            "set 'work_dir' to a directory you can write, on a filesystem the compute nodes share")
        return await self._remove_probe(site, probe) and self.add("work_dir", PASS, f"{work_dir} is writable")

    async def _remove_probe(self, site: Site, probe: str, check: str = "work_dir") -> bool:
        """Remove a probe directory; a FAIL of ``check`` (and False) if it is still there."""
        try:
            await site.transport.remove_tree(probe)
            left = posixpath.basename(probe) in await site.transport.listdir(posixpath.dirname(probe))
        except Exception as exc:
            left, why = True, f": {exc}"
        else:
            why = ""
        if left:
            return self.add(check, FAIL, f"cannot remove the probe {probe} on {site.where()}{why}",
                            "remove it by hand, and check who owns work_dir and its files")
        return True

    async def _resources(self, site: Site) -> bool:
        settings = site.settings
        if settings.backend != "slurm":
            return self.add("resources", SKIP, "only SLURM can test a submission (sbatch --test-only); other "
                            "schedulers are checked by the test job")
        probe = posixpath.join(await site.work_dir(), f".doctor-{secrets.token_hex(4)}")
        script = posixpath.join(probe, "test.sh")
        resources = resources_of(settings, None)
        job = ArraySubmission(0, 1, script, "/dev/null", "/dev/null", None, resources)
        argv = SlurmBackend().submit_argv(job, script)
        try:
            await site.transport.makedirs(probe)
            await site.transport.write(script, b"#!/bin/sh\ntrue\n", 0o700)
            answer = await site.transport.run([argv[0], "--test-only", *argv[1:]])
        finally:
            removed = await self._remove_probe(site, probe, "resources")
        if not removed:
            return False
        asked = ", ".join(f"{k}={settings.options[k]}" for k in resources
                          if settings.options.get(k) is not None) or "the defaults"
        if answer.ok:
            return self.add("resources", PASS, f"sbatch --test-only accepts {asked}")
        text = (answer.stderr.strip() or answer.stdout.strip()).replace("sbatch: error: ", "")
        fix = "change the resource options (partition, account, time, mem, cpus, gpus) to what the cluster offers"
        if "partition" in text.lower():
            partitions = await site.transport.run(["sinfo", "--noheader", "--format=%R"])
            names = sorted(set(partitions.stdout.split()))
            fix = f"set 'partition' to one of: {', '.join(names)}" if names else fix
        return self.add("resources", FAIL, f"sbatch --test-only refuses {asked}: {text}", fix)

    def _test_job(self, settings: config.Settings) -> None:
        from clustrix_futures.executor import ClusterPoolExecutor

        started = time.perf_counter()
        executor: Optional[ClusterPoolExecutor] = None
        try:
            executor = ClusterPoolExecutor(settings.max_workers, backend=settings.backend, **settings.options)
            ready = time.perf_counter()
            node = executor.submit(platform.node).result(timeout=self.job_timeout)
            done = time.perf_counter()
        except Exception as exc:
            run = f" (its run directory: {executor.run_dir})" if executor is not None and executor.run_dir else ""
            self.add("test-job", FAIL, f"{type(exc).__name__}: {exc}{run}",
                     "look at the job's logs (clustrix-futures logs RUN_DIR 0) and at the scheduler's view of it"
                     if executor is not None else "see the error; the checks above passed, so it is the executor's "
                     "start-up")
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            return
        executor.shutdown(wait=True)
        self.add("test-job", PASS, f"1 task ran on {node}: {done - ready:.2f} s from submit to result "
                                   f"(executor start {ready - started:.2f} s)")


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.name.ljust(width)}  {c.result.ljust(7)}  {c.detail}" for c in checks]
    fixes = [f"  {c.name}: {c.fix}" for c in checks if c.result == FAIL and c.fix]
    return "\n".join(lines + (["", "how to fix:", *fixes] if fixes else []))
