"""Shared fixtures: thin wrappers over :mod:`support` (the real infrastructure, executors for every backend,
the scheduler-command shim, the Kubernetes stand-in), and the hook that marks each test with the
infrastructure it uses.

SLURM, sshd, Grid Engine, the PBS wrappers and moto's S3 are brought up by ``tests/infra/*.sh`` the first
time a test needs them, and stopped at the end of the session if this session started them (see
:mod:`support.infra`; ``CF_SKIP_INFRA=1`` skips those tests instead).

Markers (``slurm``, ``ssh``, ``sge``, ``pbs``, ``s3``, ``kubernetes``, ``security``) are not written by hand:
every test gets those of the infrastructure fixtures it requests and of the backend it is parametrized with
(:func:`support.executors.infra_markers`), so ``-m "not slurm"`` cannot drift from what a test really uses.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.executors import BACKENDS, ExecutorFactory, backend_options, infra_markers
from support.infra import Infra, kubeconfig_text, ssh_options
from support.shim import Shim


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in sorted(infra_markers(list(getattr(item, "fixturenames", ())), params)):
            item.add_marker(name)


# ---------------------------------------------------------------- the real infrastructure


@pytest.fixture(scope="session")
def slurm() -> Iterator[Infra]:
    """A real single-node SLURM (tests/infra/slurm.sh)."""
    infra = Infra("slurm")
    infra.up()
    yield infra
    infra.down_if_started()


@pytest.fixture(scope="session")
def sshd() -> Iterator[dict[str, str]]:
    """A real sshd on 127.0.0.1:2222 (tests/infra/sshd.sh); its environment (host, port, user, key...)."""
    infra = Infra("sshd")
    infra.up()
    yield infra.env()
    infra.down_if_started()


@pytest.fixture(scope="session")
def other_account() -> Iterator[dict[str, str]]:
    """A second, unprivileged local account (tests/infra/accounts.sh) that plants files as another user of a
    shared cluster would: ``CF_OTHER_USER`` and ``CF_OTHER_UID``."""
    infra = Infra("accounts")
    infra.up()
    yield infra.env()
    infra.down_if_started()


@pytest.fixture(scope="session")
def sge() -> Iterator[Infra]:
    """Son of Grid Engine, brought up by tests/infra/sge.sh."""
    infra = Infra("sge")
    infra.up()
    yield infra
    infra.down_if_started()


@pytest.fixture(scope="session")
def pbs(slurm: Infra) -> Iterator[dict[str, str]]:
    """Debian's Torque-style PBS wrappers over SLURM (tests/infra/pbs.sh): a PBS command interface, not a PBS
    server. The environment (PATH first of all) that selects them; see ``pbs_commands``."""
    infra = Infra("pbs")
    infra.up()
    yield infra.env()
    infra.down_if_started()


@pytest.fixture(scope="session")
def s3() -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto in server mode, tests/infra/s3.sh) with the test bucket made. Its
    dummy credentials are in this process's environment for the session (boto3's chain finds them here, and
    SLURM jobs inherit them from sbatch)."""
    import boto3

    infra = Infra("s3")
    infra.up()
    env = infra.env()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            patch.setenv(name, env[name])
        client = boto3.client("s3", endpoint_url=env["CF_S3_ENDPOINT"])
        if env["CF_S3_BUCKET"] not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=env["CF_S3_BUCKET"])
        yield env
    infra.down_if_started()


@pytest.fixture
def s3_options(s3: dict[str, str], request: pytest.FixtureRequest) -> dict[str, Any]:
    """Executor options for S3 storage under a prefix of this test's own."""
    prefix = f"{request.node.name.replace('[', '-').replace(']', '')[:60]}-{os.urandom(3).hex()}"
    return {"storage": f"s3://{s3['CF_S3_BUCKET']}/{prefix}", "endpoint_url": s3["CF_S3_ENDPOINT"]}


@pytest.fixture(scope="session")
def k8s_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The Kubernetes API stand-in (tests/support/k8s_standin.py: Jobs and pods, each pod's command run as a
    local process), in a subprocess; a kubeconfig for it (bearer token, namespace ``clustrix``)."""
    directory = tmp_path_factory.mktemp("k8s")
    token = os.urandom(16).hex()
    standin = Path(__file__).parent / "support" / "k8s_standin.py"
    server = subprocess.Popen([sys.executable, str(standin), "--token", token, "--state", str(directory / "pods")],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = server.stdout.readline().strip()
    if not port.isdigit():
        server.kill()
        pytest.fail("the Kubernetes stand-in did not start")
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(port, token))
    yield {"kubeconfig": str(kubeconfig), "url": f"http://127.0.0.1:{port}", "token": token,
           "namespace": "clustrix"}
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def k8s_s3_secret(k8s_standin: dict[str, str], s3: dict[str, str]) -> str:
    """A Secret holding the S3 credentials, made through the real client: the pods get them as references."""
    from kubernetes import client, config

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    api = client.CoreV1Api(config.new_client_from_config(config_file=k8s_standin["kubeconfig"]))
    api.create_namespaced_secret(k8s_standin["namespace"], client.V1Secret(
        metadata=client.V1ObjectMeta(name="s3-credentials"),
        data={"access-key": b64(s3["AWS_ACCESS_KEY_ID"]), "secret-key": b64(s3["AWS_SECRET_ACCESS_KEY"])}))
    return "s3-credentials"


@pytest.fixture
def kubernetes_options(k8s_standin: dict[str, str], k8s_s3_secret: str) -> dict[str, Any]:
    """Executor options for the kubernetes backend on the stand-in (add S3 storage: ``s3_options``). The
    "image" is this machine: pods run this interpreter, with only the environment the pod spec gives them."""
    return {"kubeconfig": k8s_standin["kubeconfig"], "image": "clustrix-futures-test:standin",
            "python": sys.executable, "env": {
                "AWS_ACCESS_KEY_ID": {"secret": k8s_s3_secret, "key": "access-key"},
                "AWS_SECRET_ACCESS_KEY": {"secret": k8s_s3_secret, "key": "secret-key"},
                "AWS_DEFAULT_REGION": "us-east-1"}}


@pytest.fixture
def pbs_commands(pbs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the PBS wrappers first on PATH for this test only (their qsub/qstat/qdel shadow Grid Engine's)."""
    for name, value in pbs.items():
        monkeypatch.setenv(name, os.path.expandvars(value))


@pytest.fixture
def remote(sshd: dict[str, str], slurm: Infra) -> dict[str, Any]:
    """Executor options for SLURM over SSH as cfuser."""
    return {"backend": "slurm", **ssh_options(sshd)}


# ---------------------------------------------------------------- executors


@pytest.fixture
def signals() -> Iterator[Path]:
    """A directory every test user can write: tasks (run as cfuser over SSH too) signal the test here."""
    path = Path(tempfile.mkdtemp(prefix="cf-signals-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _executor_factory(base: dict[str, Any], created: list[Any]) -> ExecutorFactory:
    from clustrix_futures import ClusterPoolExecutor

    def make(max_workers: Any = None, **options: Any) -> Any:
        executor = ClusterPoolExecutor(max_workers, **{**base, **options})
        created.append(executor)
        return executor

    return make


@pytest.fixture
def make_executor(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                  signals: Path) -> Iterator[ExecutorFactory]:
    """Builds executors for the selected backend; shuts every one down (cancelling) after the test,
    before the signal directory goes (so a task waiting on a signal file sees it)."""
    created: list[Any] = []
    yield _executor_factory(backend_options(backend, request, tmp_path), created)
    for executor in created:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def slurm_executor(slurm: Infra, tmp_path: Path, signals: Path) -> Iterator[ExecutorFactory]:
    """Builds SLURM executors (work_dir under tmp_path unless given); shuts them down after the test."""
    created: list[Any] = []
    yield _executor_factory({"backend": "slurm", "work_dir": str(tmp_path / "runs")}, created)
    for executor in created:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def executors() -> Iterator[list[Any]]:
    """Executors made by a test itself; shut down (cancelling) at its end."""
    made: list[Any] = []
    yield made
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shim:
    """Counts scheduler commands run by this process (request the scheduler's fixture first)."""
    directory = tmp_path / "shim"
    directory.mkdir()
    made = Shim(directory)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return made
