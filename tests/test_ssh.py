"""SSHTransport against the real sshd on 127.0.0.1:2222 (user cfuser, bare /usr/bin/python3) and real SLURM.

What is checked: the worker's code is staged for a remote Python without cloudpickle, many tasks share ONE
SSH connection, sshd restarts and killed connections lose no result and never run a command twice, bad host
keys and a wrong remote Python are refused before any submission, the user's own modules travel by value,
and a connection that stays down fails the live futures with CONNECTION_LOST.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import workloads
from support.infra import REMOTE_WORK_DIR, ssh_options
from support.sshd import kill_connection, own_connections
from support.waiting import RESULT_WAIT

from clustrix_futures import ClusterPoolExecutor, ConfigError, config
from clustrix_futures.remote.ssh import SSHTransport

# ------------------------------------------------------------------ helpers


@pytest.fixture
def own_key(sshd: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A client key only this test uses, authorized for cfuser while it runs: (private key path, fingerprint)."""
    key = tmp_path / "own_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = Path(f"{key}.pub").read_text()
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    authorized = Path(sshd["CF_SSH_KEY"]).parent / "authorized_keys" / "cfuser"
    with authorized.open("a") as out:
        out.write(public)
    yield str(key), fingerprint
    kept = [line for line in authorized.read_text().splitlines(keepends=True) if line != public]
    temporary = authorized.with_name(f"cfuser.{os.getpid()}.tmp")
    temporary.write_text("".join(kept))
    temporary.chmod(0o644)
    temporary.replace(authorized)


def accepted(env: dict[str, str], fingerprint: str) -> int:
    """SSH logins with one key so far. sshd.log is appended to across restarts (compare differences) and is
    shared with anyone else testing against this sshd: count only a key of our own."""
    log = Path(env["CF_SSHD_LOG"]).read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "Accepted publickey for cfuser" in line and fingerprint in line)


def staged_imports() -> tuple[str, str, tuple[int, int], int]:
    import cloudpickle

    import clustrix_futures

    return cloudpickle.__file__, clustrix_futures.__file__, tuple(sys.version_info[:2]), os.getuid()


# ------------------------------------------------------------------ the executor over SSH


def test_bare_remote_python_gets_the_worker_code_staged(remote, executors):
    ex = ClusterPoolExecutor(**remote)
    executors.append(ex)
    pickler, package, version, uid = ex.submit(staged_imports).result(RESULT_WAIT)
    run_dir = ex.run_dir
    assert run_dir.startswith(REMOTE_WORK_DIR + "/")
    assert pickler.startswith(f"{run_dir}/code/cloudpickle/")  # cfuser's python3 has no cloudpickle
    assert package.startswith(f"{run_dir}/code/clustrix_futures/")
    assert version == tuple(sys.version_info[:2])
    assert uid == int(subprocess.run(["id", "-u", "cfuser"], capture_output=True, text=True).stdout)


def test_500_tasks_use_one_ssh_connection(remote, sshd, own_key, executors):
    key, fingerprint = own_key
    before = accepted(sshd, fingerprint)
    start = time.monotonic()
    ex = ClusterPoolExecutor(**{**remote, "client_keys": [key]}, tasks_per_element=50)
    executors.append(ex)
    connected = time.monotonic()
    futures = [ex.submit(workloads.square, x) for x in range(500)]
    assert [f.result(RESULT_WAIT) for f in futures] == [x * x for x in range(500)]
    ex.shutdown()
    print(f"\nSSH executor start-up {connected - start:.2f} s; 500 tasks {time.monotonic() - connected:.2f} s")
    assert accepted(sshd, fingerprint) - before == 1


def test_command_cut_off_by_a_drop_runs_once_and_its_answer_arrives(sshd, signals):
    """The retry of a command whose answer was lost replays the first run's outcome (sbatch never twice)."""
    count = signals / "runs"

    async def scenario() -> Any:
        transport = SSHTransport(config.resolve(None, "slurm", None, ssh_options(sshd)))
        await transport.connect()
        try:
            command = transport.run(["sh", "-c", f"echo run >> {count}; sleep 1.5; echo out; echo err >&2; exit 7"])
            running = asyncio.ensure_future(command)
            await asyncio.sleep(0.5)
            assert kill_connection(transport) > 0
            return await asyncio.wait_for(running, RESULT_WAIT)
        finally:
            await transport.close()

    result = asyncio.run(scenario())
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert count.read_text() == "run\n"


# ------------------------------------------------------------------ refused before any submission


def write_known_hosts(path: Path, line: str) -> str:
    path.write_text(line)
    return str(path)


def test_wrong_or_missing_host_key_is_refused(remote, sshd, tmp_path):
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                           capture_output=True)
    assert other.returncode == 0
    wrong = write_known_hosts(tmp_path / "wrong", f"[127.0.0.1]:2222 {(tmp_path / 'other.pub').read_text()}")
    empty = write_known_hosts(tmp_path / "empty", "")
    for known_hosts in (wrong, empty):
        with pytest.raises(ConfigError, match=r"host key of 127\.0\.0\.1:2222 is not trusted") as caught:
            ClusterPoolExecutor(**{**remote, "known_hosts": known_hosts})
        assert "ssh-keyscan -p 2222 127.0.0.1 >> ~/.ssh/known_hosts" in str(caught.value)
        assert "'known_hosts'" in str(caught.value)


def test_bad_key_and_closed_port_are_config_errors(remote, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    with pytest.raises(ConfigError, match=r"authentication to 127\.0\.0\.1:2222 failed"):
        ClusterPoolExecutor(**{**remote, "client_keys": [str(tmp_path / "stranger")]})
    with pytest.raises(ConfigError, match=r"cannot connect to 127\.0\.0\.1:2223"):
        ClusterPoolExecutor(**{**remote, "port": 2223})


def test_ssh_config_alias_is_honoured_and_host_keys_still_checked(remote, sshd, monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    alias = textwrap.dedent(f"""
        Host cf-alias
            HostName 127.0.0.1
            Port 2222
            User cfuser
            IdentityFile {sshd['CF_SSH_KEY']}
            UserKnownHostsFile {sshd['CF_SSH_KNOWN_HOSTS']}
        Host cf-unchecked
            HostName 127.0.0.1
            Port 2222
            User cfuser
            IdentityFile {sshd['CF_SSH_KEY']}
            UserKnownHostsFile none
            StrictHostKeyChecking no
    """)
    (home / ".ssh" / "config").write_text(alias)
    monkeypatch.setenv("HOME", str(home))
    bare = {"backend": "slurm", "python": remote["python"], "work_dir": remote["work_dir"]}
    with ClusterPoolExecutor(**bare, host="cf-alias") as ex:
        assert ex.submit(workloads.square, 12).result(RESULT_WAIT) == 144
    with pytest.raises(ConfigError, match=r"host key of 127\.0\.0\.1:2222 is not trusted"):
        ClusterPoolExecutor(**bare, host="cf-unchecked")  # no ~/.ssh/known_hosts in this HOME


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory cfuser can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cf-ssh-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_python_version_mismatch_is_refused_before_any_submission(remote, shared_dir):
    fake = shared_dir / "python3"
    fake.write_text("#!/bin/sh\necho 3.99\necho False False\necho -\n")  # as engine._PROBE prints them
    fake.chmod(0o755)
    token = secrets.token_hex(4)
    work_dir, job_name = f"{REMOTE_WORK_DIR}/refused-{token}", f"cf-refused-{token}"
    local = "{}.{}".format(*sys.version_info[:2])
    with pytest.raises(ConfigError, match=rf"is Python 3\.99, but this client runs Python {local}.*'python'"):
        ClusterPoolExecutor(**{**remote, "python": str(fake), "work_dir": work_dir, "job_name": job_name})
    assert not os.path.exists(work_dir)  # no run directory, so no batch was written
    jobs = subprocess.run(["squeue", "-h", "-t", "all", "-u", "cfuser", "-n", job_name, "-o", "%A"],
                          capture_output=True, text=True, check=True).stdout
    assert jobs.strip() == ""  # nothing submitted under this executor's job name
    assert not own_connections()  # the refused executor closed its SSH connection


# ------------------------------------------------------------------ code the remote side does not have


def test_local_module_the_remote_lacks_runs_by_value(remote, executors, tmp_path, monkeypatch):
    name = f"mytasks_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import importlib.util

        SCALE = 3

        def helper(x):
            return x * SCALE

        def work(x):
            return helper(x) + 1, importlib.util.find_spec(__name__) is None
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module(name)
        ex = ClusterPoolExecutor(**remote)
        executors.append(ex)
        assert ex.submit(module.work, 5).result(RESULT_WAIT) == (16, True)  # True: not importable there
        assert list(ex.map(module.work, range(3), timeout=RESULT_WAIT)) == [(1, True), (4, True), (7, True)]
    finally:
        sys.modules.pop(name, None)


# ------------------------------------------------------------------ a connection that stays down
