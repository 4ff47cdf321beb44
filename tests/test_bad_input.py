"""Bad input gets a specific error naming the file, option or run, never a raw traceback (issue 16).

Each case is taken for real: the files are written, the commands run, the accounts exist (``nobody`` is the
unprivileged one; a case needing a refusal that root would not get runs as ``nobody``).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import workloads

from clustrix_futures import ClusterPoolExecutor, ConfigError, config
from clustrix_futures.remote.site import Site
from clustrix_futures.remote.transport import LocalTransport
from clustrix_futures.runfiles.layout import new_run_name
from clustrix_futures.schedulers.command import CommandScheduler
from clustrix_futures.schedulers.slurm import SlurmBackend
from clustrix_futures.tools import cli
from clustrix_futures.tools.doctor import FAIL, Doctor
from clustrix_futures.tools.runs import parse_age

ROOT = Path(__file__).resolve().parents[1]
WAIT = 120


@pytest.fixture(autouse=True)
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)


def config_error(path: Path, monkeypatch: pytest.MonkeyPatch, profile: str = "p") -> str:
    monkeypatch.setenv(config.CONFIG_ENV, str(path))
    with pytest.raises(ConfigError) as caught:
        config.resolve(profile, None, None, {})
    return str(caught.value)


def without_dac_override(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as root WITHOUT the capabilities that let root read and write any file (so file
    modes apply to it as to any user), with this checkout's code."""
    return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", code],
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
                          timeout=60)


# ---------------------------------------------------------------- option values


@pytest.mark.parametrize("name, value", [
    ("time", "0"), ("time", "00:00:00"), ("time", "0-00:00"), ("time", 0), ("mem", "0G"), ("mem", "0"),
    ("mem", 0), ("poll_interval", float("nan")), ("grace_period", float("inf")), ("element_seconds", -1.0),
    ("batch_window", float("-inf"))])
def test_zero_nan_and_inf_values_are_refused(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"option '{name}'"):
        config.resolve(None, "slurm", None, {name: value})


@pytest.mark.parametrize("value", [
    {"OUT_OF_MEMORY": {"mem": 1}}, {"OUT_OF_MEMORY": {"mem": "x0.5"}}, {"TIMEOUT": {"time": True}},
    {"TIMEOUT": {"time": "twice"}}, {"OUT_OF_MEMORY": {"cpus": 2}}, {"NODE_FAIL": {"exclude_node": True}},
    {"oom": {"mem": 2}}, {"OUT_OF_MEMORY": "x2"}, "double", [2], {"TIMEOUT": {"time": float("inf")}}])
def test_a_retry_policy_it_cannot_apply_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="option 'retry_policy'"):
        config.resolve(None, "slurm", None, {"retry_policy": value})


def test_a_retry_policy_s_factors_are_numbers() -> None:
    settings = config.resolve(None, "slurm", None, {"retry_policy": {
        "OUT_OF_MEMORY": {"mem": "x2"}, "TIMEOUT": {"time": 1.5, "mem": "X3"}, "PREEMPTED": {}}})
    assert settings["retry_policy"] == {"OUT_OF_MEMORY": {"mem": 2.0}, "TIMEOUT": {"time": 1.5, "mem": 3.0},
                                        "PREEMPTED": {}}


def test_nonzero_values_still_pass() -> None:
    settings = config.resolve(None, "slurm", None, {"time": "0:30", "mem": "08G", "poll_interval": 0.5})
    assert (settings["time"], settings["mem"], settings["poll_interval"]) == ("0:30", "08G", 0.5)


def test_a_bad_value_in_a_profile_names_the_file_and_the_profile(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("profiles:\n  hpc:\n    backend: slurm\n    mem: 0G\n")
    message = config_error(path, monkeypatch, "hpc")
    assert message.startswith(f"{path}, profile 'hpc': option 'mem'")


def test_nan_from_a_yaml_profile_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("profiles:\n  p:\n    grace_period: .nan\n")
    assert "option 'grace_period' must be a positive (finite) number" in config_error(path, monkeypatch)


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "-5d", "infd", "NaNh"])
def test_clean_older_than_refuses_nan_inf_and_negative(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        parse_age(text)
    with pytest.raises(SystemExit) as caught:
        cli.main(["clean", f"--older-than={text}", "--dry-run"])
    assert caught.value.code == 2 and "--older-than: an age must be a finite number" in capsys.readouterr().err


# ---------------------------------------------------------------- configuration files


def test_a_non_utf8_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"profiles:\n  p:\n    partition: caf\xe9\n")
    assert config_error(path, monkeypatch) == f"the configuration file {path} is not UTF-8 text (invalid " \
                                              f"continuation byte at byte 33)"


def test_profiles_as_a_list_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("profiles:\n  - p\n  - q\n")
    message = config_error(path, monkeypatch)
    assert message.startswith(f"{path}: 'profiles' must map profile names to their options") and "list" in message


def test_a_config_that_is_a_directory_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_error(tmp_path, monkeypatch) == f"the configuration file {tmp_path} is not a regular file"


def test_an_unreadable_config_names_the_file(tmp_path: Path) -> None:
    """Our own file, mode 0200, read without root's override."""
    path = tmp_path / "config.yaml"
    path.write_text("profiles:\n  p: {}\n")
    path.chmod(0o200)
    done = without_dac_override("from clustrix_futures import config, ConfigError\n"
                     "try: config.resolve('p', None, None, {})\n"
                     "except ConfigError as e: print(e)\n", {config.CONFIG_ENV: str(path)})
    assert done.stdout.strip() == f"cannot read the configuration file {path}: Permission denied", done.stderr


# ---------------------------------------------------------------- ~user


def expand(path: str) -> str:
    async def go() -> str:
        return await Site(config.resolve(None, "slurm", None, {})).expand(path)

    return asyncio.run(go())


def test_tilde_user_expands_to_that_users_home() -> None:
    assert expand("~nobody/x/y") == f"{pwd.getpwnam('nobody').pw_dir}/x/y"
    assert expand("~root") == pwd.getpwnam("root").pw_dir
    assert expand("~/x") == os.path.expanduser("~") + "/x" and expand("~") == os.path.expanduser("~")
    with pytest.raises(ConfigError, match="there is no user 'no-such-user-cf'"):
        expand("~no-such-user-cf/x")
    with pytest.raises(ConfigError, match="is not a user name"):
        expand("~$(id)/x")


def test_work_dir_of_another_user_is_under_their_home(tmp_path: Path) -> None:
    async def go() -> str:
        return await Site(config.resolve(None, "slurm", None, {"work_dir": "~nobody/cf"})).work_dir()

    assert asyncio.run(go()) == f"{pwd.getpwnam('nobody').pw_dir}/cf"


# ---------------------------------------------------------------- work_dir


def test_a_work_dir_that_is_a_file_names_it(tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("")
    with pytest.raises(ConfigError) as caught:
        ClusterPoolExecutor(backend="ssh", work_dir=str(plain))
    assert f"work_dir {plain} is not safe: {plain} is not a directory; set work_dir to a directory" \
        in str(caught.value)  # checked before anything is made


def test_a_work_dir_that_is_not_writable_names_it(tmp_path: Path) -> None:
    """Our own directory, mode 0555, written without root's override."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    done = without_dac_override("from clustrix_futures import ClusterPoolExecutor, ConfigError\n"
                     f"try: ClusterPoolExecutor(backend='ssh', work_dir={str(locked)!r})\n"
                     "except ConfigError as e: print(e)\n", {})
    assert str(locked) in done.stdout and "work_dir" in done.stdout, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr


# ---------------------------------------------------------------- manifests


def planted_run(tmp_path: Path, manifest: bytes) -> Path:
    run = tmp_path / new_run_name()
    (run / "batches").mkdir(parents=True, mode=0o700)
    run.chmod(0o700)
    (run / "manifest.json").write_bytes(manifest)
    return run


@pytest.mark.parametrize("manifest, said", [
    (b"{not json", "is corrupt (not JSON"),
    (b"[1, 2]", "is not one of ours"),
    (json.dumps({"backend": "evil", "options": {}}).encode(), "is not one of ours"),
    (json.dumps({"backend": "slurm", "options": {"setup": 3, "python": "/bin/x"}}).encode(), "is not one of ours")])
def test_status_and_attach_name_a_corrupt_or_foreign_manifest(tmp_path: Path, manifest: bytes, said: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = planted_run(tmp_path, manifest)
    assert cli.main(["status", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and said in err and "Traceback" not in err
    with pytest.raises(ConfigError) as caught:
        ClusterPoolExecutor.attach(str(run), backend="ssh")
    assert str(run) in str(caught.value) and said in str(caught.value)


# ---------------------------------------------------------------- a failed cancel


class UnreachableSlurm(SlurmBackend):
    """SLURM whose ``scancel`` fails, as when the controller is unreachable: a real command, exit status 1."""

    def cancel_argv(self, elements: object) -> list[str]:
        return ["sh", "-c", "echo 'scancel: error: Unable to contact slurm controller' >&2; exit 1"]


def test_a_failed_cancel_returns_every_element_as_still_running() -> None:
    scheduler = CommandScheduler(UnreachableSlurm(), LocalTransport(), lambda batch, index, stream: "")
    elements = [("41", 0), ("41", 1), ("42", 3)]
    assert asyncio.run(scheduler.cancel(elements)) == set(elements)


def test_a_failed_scancel_leaves_skip_markers_so_the_tasks_never_run(slurm: object, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A held SLURM array is cancelled while scancel fails; released, its element must skip every task."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "scancel").write_text("#!/bin/sh\necho 'scancel: error: Unable to contact slurm controller' >&2\n"
                                   "exit 1\n")
    (shims / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    marks = tmp_path / "marks"
    marks.mkdir()
    with ClusterPoolExecutor(backend="slurm", work_dir=str(tmp_path / "runs"), scheduler_args=["--hold"],
                             tasks_per_element=2, keep_files=True) as ex:
        futures = [ex.submit(workloads.square_and_record, str(marks), x) for x in (5, 6)]
        run_dir = Path(str(ex.run_dir))
        job = _wait_for_job(run_dir)
        assert all(f.cancel() for f in futures)
        _wait_for(lambda: len(list((run_dir / "skip").iterdir())) == 2, "skip markers for both tasks")
        subprocess.run(["scontrol", "release", job], check=True)
        _wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout == "",
                  "the released element to end")
    assert workloads.runs_recorded(marks) == {}
    subprocess.run(["rm", "-rf", str(run_dir)], check=False)


def _wait_for_job(run_dir: Path) -> str:
    _wait_for(lambda: list((run_dir / "batches").glob("*.json")), "the batch record")
    return str(json.loads(next((run_dir / "batches").glob("*.json")).read_text())["job_id"])


def _wait_for(condition: object, what: str) -> None:
    import time

    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# ---------------------------------------------------------------- doctor


def test_doctor_leaves_no_probe_files(slurm: object, tmp_path: Path) -> None:
    work_dir = tmp_path / "work"
    doctor = Doctor(None, "slurm", {"work_dir": str(work_dir)}, 120)
    checks = {c.name: c for c in doctor.run()}
    assert doctor.healthy, checks
    assert checks["work_dir"].result == "ok" and checks["resources"].result == "ok"
    assert [p.name for p in work_dir.iterdir() if p.name.startswith(".doctor")] == []


def test_doctor_reports_a_probe_it_could_not_remove(tmp_path: Path) -> None:
    """The probe's directory is mode 0555 and root's override is dropped: removal fails, and doctor says so."""
    probe = tmp_path / ".doctor-stuck"
    probe.mkdir()
    (probe / "probe").write_text("")
    probe.chmod(0o555)
    code = ("import asyncio\nfrom clustrix_futures import config\nfrom clustrix_futures.remote.site import Site\n"
            "from clustrix_futures.tools.doctor import Doctor\n"
            "doctor = Doctor(None, 'slurm', {}, 1)\n"
            "site = Site(config.resolve(None, 'slurm', None, {}))\n"
            f"print(asyncio.run(doctor._remove_probe(site, {str(probe)!r})))\n"
            "print(*['|'.join((c.name, c.result, c.detail)) for c in doctor.checks], sep='\\n')\n")
    done = without_dac_override(code, {})
    lines = done.stdout.splitlines()
    assert lines[0] == "False", (done.stdout, done.stderr)
    assert lines[1].startswith(f"work_dir|{FAIL}|cannot remove the probe {probe}")
    assert probe.exists()


@pytest.mark.parametrize(("backend", "options", "message"), [
    ("sge", {}, "the sge backend sends no warning signal before an element's time limit; checkpoints work on: slurm"),
    ("ssh", {}, "the ssh backend sends no warning signal"),
    ("slurm", {"storage": "s3://bucket/prefix"}, "not supported with S3 storage"),
])
def test_checkpoints_where_no_warning_signal_can_come_are_refused_at_start(backend: str, options: dict,
                                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ClusterPoolExecutor(backend=backend, signal_before_end=60, **options)


@pytest.mark.parametrize("value", [0, -5, 1.5, "90", True])
def test_signal_before_end_is_a_positive_number_of_seconds(value: object) -> None:
    with pytest.raises(ConfigError, match="option 'signal_before_end' must be a positive integer"):
        config.resolve(None, "slurm", None, {"signal_before_end": value})
