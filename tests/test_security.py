"""Other people's run directories, work_dirs and symlinks: attacks planted for real by a second local account.

The account (``cfother``, tests/infra/accounts.sh) plants as another user of a shared cluster could: run
directories in a mode-1777 shared ``work_dir`` whose manifest names an interpreter that would leave a marker
file, whose result journal holds a pickle that would leave one too when unpickled, and whose ``host_dir`` points
at a victim directory; symlinks at the names our writes go to; directories around a ``work_dir``. Each test
first shows the plant is live (the interpreter and the pickle do leave the marker when run), then that the
commands and the executor neither run it nor delete anything of it (docs/security.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clustrix_futures import ClusterPoolExecutor, ConfigError
from clustrix_futures.remote.ownership import check_work_dir
from clustrix_futures.remote.transport import LocalTransport
from clustrix_futures.runfiles import journal
from clustrix_futures.tools import cli

RUN_NAME = "20260101-000000-deadbeef"


class Planted:
    """Unpickled, runs ``touch MARKER``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def as_other(account: dict[str, str], *argv: str) -> None:
    subprocess.run(["runuser", "-u", account["CF_OTHER_USER"], "--", *argv], check=True, capture_output=True)


def shared_directory(prefix: str, mode: int) -> Path:
    """A directory right under /tmp (the other account cannot traverse pytest's 0700 tmp_path)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(mode)
    return path


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A mode-1777 shared work_dir, a victim directory (0700, one file) and where a marker would appear."""
    shared = shared_directory("cf-shared-", 0o1777)
    victim = shared_directory("cf-victim-", 0o700)
    staging = shared_directory("cf-staging-", 0o755)  # readable by the other account, which copies from it
    (victim / "precious").write_text("keep me")
    yield {"shared": shared, "victim": victim, "marker": tmp_path / "marker", "staging": staging}
    for path in (shared, victim, staging):
        shutil.rmtree(path, ignore_errors=True)


def hostile_run(directory: Path, scene: dict[str, Path]) -> Path:
    """A run directory at ``directory`` whose manifest names an interpreter that touches the marker, whose
    ``host_dir`` is the victim, whose staged code would touch it on import, and whose result is the planted
    pickle."""
    marker = scene["marker"]
    evil = directory / "evil-python"
    for sub in ("batches", "results", "logs", "skip", "code/clustrix_futures/node"):
        (directory / sub).mkdir(parents=True)
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    (directory / "code/clustrix_futures/__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (directory / "manifest.json").write_text(json.dumps({
        "backend": "ssh", "options": {"python": str(evil), "setup": [f"touch {marker}"]}, "python": str(evil),
        "host_dir": str(scene["victim"]), "staged": True, "client": "elsewhere", "pid": 1, "created": 0,
        "max_workers": None}))
    (directory / "batches/0.json").write_text(json.dumps(
        {"batch": 0, "job_id": "host-0", "elements": [[0]], "resources": {}}))
    body = pickle.dumps((True, Planted(str(marker)), "", 0.0), protocol=4)
    (directory / "results/0-0.res").write_bytes(journal.preamble() + journal.encode_frame(0, journal.OK, 1, 2, body))
    return directory


def plant(account: dict[str, str], scene: dict[str, Path]) -> Path:
    """The hostile run, owned by the other account, in the shared work_dir; shown live first."""
    staged = hostile_run(scene["staging"] / "staged", scene)
    subprocess.run(["chmod", "-R", "a+rX", str(scene["staging"])], check=True)
    target = scene["shared"] / RUN_NAME
    as_other(account, "cp", "-r", str(staged), str(target))
    assert target.stat().st_uid == int(account["CF_OTHER_UID"])
    prove_live(target, scene["marker"])
    return target


def prove_live(run: Path, marker: Path) -> None:
    """The plant does harm when trusted: its interpreter and its pickle each touch the marker."""
    subprocess.run([str(run / "evil-python")], check=True)
    assert marker.exists()
    marker.unlink()
    frame = next(journal.read_frames((run / "results/0-0.res").read_bytes()))
    data = (run / "results/0-0.res").read_bytes()
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=data[frame.offset:frame.offset + frame.size], check=True)
    assert marker.exists()
    marker.unlink()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def untouched(run: Path, scene: dict[str, Path]) -> None:
    assert not scene["marker"].exists(), "something planted ran"
    assert (scene["victim"] / "precious").read_text() == "keep me"
    assert (run / "manifest.json").exists() and (run / "results/0-0.res").exists()


def test_planted_runs_are_skipped_by_every_command_and_by_attach(other_account, scene, capsys):
    run = plant(other_account, scene)
    work = ["--work-dir", str(scene["shared"])]
    code, text = run_cli(capsys, "status", *work)
    assert code == 0 and f"skipped {run}" in text and f"owned by uid {other_account['CF_OTHER_UID']}" in text
    for argv in (["status", str(run)], ["status", RUN_NAME], ["logs", str(run), "0"], ["cancel", str(run)]):
        code, text = run_cli(capsys, *argv, *work)
        assert code == 2 and "not your run directory" in text and "nothing in it was read" in text, (argv, text)
    for argv in (["clean", "--dry-run"], ["clean"], ["clean", str(run)]):
        code, text = run_cli(capsys, *argv, *work)
        assert code == 0 and f"kept     {run}: skipped" in text and "0 " in text and "1 kept" in text, (argv, text)
    with pytest.raises(ConfigError, match="refusing to attach .* not your run directory"):
        ClusterPoolExecutor.attach(str(run), backend="ssh", work_dir=str(scene["shared"]))
    untouched(run, scene)


def test_a_group_writable_run_of_ours_is_skipped_too(scene, capsys):
    run = hostile_run(scene["shared"] / RUN_NAME, scene)
    run.chmod(0o770)
    code, text = run_cli(capsys, "clean", "--work-dir", str(scene["shared"]))
    assert code == 0 and "others can write to it (mode 0770)" in text
    untouched(run, scene)


def test_read_only_commands_of_our_own_hostile_run_run_nothing_and_clean_stays_inside(tmp_path, scene, capsys):
    """Even a run of ours is read as data: the manifest's interpreter never runs, no result is unpickled, its
    staged code is not imported by status, and clean removes WORK_DIR/NAME, not the host_dir it names."""
    work_dir = tmp_path / "runs"
    work_dir.mkdir(mode=0o700)
    run = hostile_run(work_dir / RUN_NAME, scene)
    shutil.rmtree(run / "code")  # a run of ours holds the code we staged
    prove_live(run, scene["marker"])
    work = ["--work-dir", str(work_dir)]
    code, text = run_cli(capsys, "status", str(run), "--json", *work)
    assert code == 0 and json.loads(text)["counts"] == {"succeeded": 1}, text
    code, text = run_cli(capsys, "clean", "--dry-run", *work)
    assert code == 0 and f"would remove  {run}" in text
    assert not scene["marker"].exists() and run.exists()
    code, text = run_cli(capsys, "clean", *work)
    assert code == 0 and "1 removed" in text, text
    assert not run.exists() and not scene["marker"].exists()
    assert (scene["victim"] / "precious").read_text() == "keep me"


def test_clean_reports_a_removal_that_failed(tmp_path, scene, capsys):
    work_dir = tmp_path / "runs"
    work_dir.mkdir(mode=0o700)
    run = hostile_run(work_dir / RUN_NAME, scene)
    shutil.rmtree(run / "code")
    subprocess.run(["chattr", "+i", str(run / "logs")], check=True)  # even root cannot remove it now
    try:
        code, text = run_cli(capsys, "clean", "--work-dir", str(work_dir))
    finally:
        subprocess.run(["chattr", "-i", str(run / "logs")], check=True)
    assert code == 1 and f"FAILED   {run}" in text and "1 could not be removed" in text, text


def test_a_planted_symlink_at_a_written_path_overwrites_nothing(other_account, scene):
    """The other account owns the directory (a swapped run directory) and points every name our write used to
    go through (the file and its old predictable temporary name) at the victim's 0600 file."""
    swapped = shared_directory("cf-swapped-", 0o755)
    try:
        shutil.chown(swapped, user=other_account["CF_OTHER_USER"])
        precious = scene["victim"] / "precious"
        precious.chmod(0o600)
        target = swapped / "manifest.json"
        for name in (target, Path(f"{target}.{os.getpid()}.tmp")):
            as_other(other_account, "ln", "-s", str(precious), str(name))
        asyncio.run(LocalTransport().write(str(target), b"ours"))
        assert precious.read_text() == "keep me"
        assert not target.is_symlink() and target.read_bytes() == b"ours"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    finally:
        shutil.rmtree(swapped, ignore_errors=True)


def test_the_run_directory_is_created_exclusively(tmp_path):
    transport = LocalTransport()
    asyncio.run(transport.mkdir(str(tmp_path / "run")))
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    with pytest.raises(FileExistsError):
        asyncio.run(transport.mkdir(str(tmp_path / "run")))


# ---------------------------------------------------------------- work_dir


@pytest.mark.parametrize("layout", ["foreign-owner", "not-sticky", "foreign-in-sticky", "bare-shared"])
def test_an_unsafe_work_dir_is_refused_naming_the_component(other_account, layout):
    top = shared_directory("cf-wd-", 0o755)
    try:
        if layout == "foreign-owner":
            shutil.chown(top, user=other_account["CF_OTHER_USER"])
            work_dir, culprit, why = top / "cf", top, "is owned by uid"
        elif layout == "not-sticky":
            top.chmod(0o777)
            work_dir, culprit, why = top / "me" / "cf", top, "is not sticky"
        elif layout == "foreign-in-sticky":
            top.chmod(0o1777)
            as_other(other_account, "mkdir", "-m", "755", str(top / "theirs"))
            work_dir, culprit, why = top / "theirs" / "cf", top / "theirs", "inside the shared directory"
        else:
            top.chmod(0o1777)
            work_dir, culprit, why = top, top, "can be written by others (mode 1777)"
        with pytest.raises(ConfigError) as refused:
            asyncio.run(check_work_dir(LocalTransport(), str(work_dir)))
        message = str(refused.value)
        assert f"is not safe: {culprit} " in message and why in message, message
        assert not (top / "me").exists() and not (top / "cf").exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_executor_refuses_an_unsafe_work_dir_before_making_anything(other_account):
    top = shared_directory("cf-wd-", 0o777)
    try:
        with pytest.raises(ConfigError, match=f"{top} can be written by others .* not sticky"):
            ClusterPoolExecutor(backend="ssh", work_dir=str(top / "cf"))
        assert list(top.iterdir()) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_subdirectory_of_my_own_in_sticky_tmp_is_accepted():
    assert stat.S_IMODE(os.stat("/tmp").st_mode) & stat.S_ISVTX
    me = shared_directory("cf-me-", 0o700)
    try:
        with ClusterPoolExecutor(backend="ssh", work_dir=str(me / "cf"), keep_files=True) as ex:
            assert ex.submit(divmod, 7, 2).result(timeout=60) == (3, 1)
            run = Path(str(ex.run_dir))
        assert run.parent == me / "cf" and stat.S_IMODE(run.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(me, ignore_errors=True)


# ---------------------------------------------------------------- over SSH (SFTP lstat, FXF_EXCL)


def test_over_ssh_a_foreign_run_is_refused_and_a_planted_symlink_overwrites_nothing(sshd, other_account, scene):
    """As cfuser over the real sshd: a run directory the other account planted is not cfuser's (SFTP lstat
    against ``id -u`` there); cfuser's own 0600 file behind a symlink at the written path keeps its content."""
    from support.infra import ssh_options

    from clustrix_futures import config
    from clustrix_futures.remote.ownership import run_refusal
    from clustrix_futures.remote.ssh import SSHTransport

    run = plant(other_account, scene)
    mine = shared_directory("cf-cfuser-", 0o700)
    shutil.chown(mine, user=sshd["CF_SSH_USER"])
    precious = mine / "precious"
    link = mine / "manifest.json"

    async def scenario() -> tuple[str | None, str | None]:
        transport = SSHTransport(config.resolve(None, "slurm", None, ssh_options(sshd)))
        await transport.connect()
        try:
            setup = f"echo keep me > {precious}; chmod 600 {precious}; ln -s {precious} {link}"
            await transport.run(["sh", "-c", setup])
            foreign = await run_refusal(transport, str(run), str(scene["shared"]))
            await transport.write(str(link), b"ours")
            return foreign, await run_refusal(transport, str(mine), "")
        finally:
            await transport.close()

    try:
        foreign, own = asyncio.run(scenario())
        assert foreign is not None and f"owned by uid {other_account['CF_OTHER_UID']}" in foreign
        assert own is None
        assert precious.read_text() == "keep me\n" and not link.is_symlink() and link.read_bytes() == b"ours"
    finally:
        shutil.rmtree(mine, ignore_errors=True)
    untouched(run, scene)


def test_a_planted_resume_file_is_never_loaded(other_account, scene):
    """A task that checkpointed resumes from ``batches/task-TASK.resume`` (clustrix_futures.node.checkpointing):
    one the other account planted there, as a file or as a symlink to a file of ours, ends the element saying
    so; nothing of it is unpickled."""
    from clustrix_futures.node.checkpointing import resumed
    from clustrix_futures.runfiles.layout import RunDir

    batches = scene["shared"] / "batches"
    batches.mkdir(mode=0o1777)
    batches.chmod(0o1777)
    staged = scene["staging"] / "planted.pkl"
    staged.write_bytes(pickle.dumps(Planted(str(scene["marker"]))))
    staged.chmod(0o644)
    run_dir = RunDir(str(scene["shared"]))
    as_other(other_account, "cp", str(staged), run_dir.resume(1))
    ours = scene["staging"] / "ours.pkl"
    ours.write_bytes(pickle.dumps(Planted(str(scene["marker"]))))
    as_other(other_account, "ln", "-s", str(ours), run_dir.resume(2))
    with pytest.raises(SystemExit, match="belongs to uid .*not to this account: it is not loaded"):
        resumed(run_dir, 1, b"payload")
    with pytest.raises(SystemExit, match="cannot be opened safely"):
        resumed(run_dir, 2, b"payload")
    assert resumed(run_dir, 3, b"payload") == b"payload"  # no resume file: the task's own payload
    assert not scene["marker"].exists()
