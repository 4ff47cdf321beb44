"""Shared fixtures: the real test infrastructure, and executors for every backend.

SLURM and sshd are brought up by ``tests/infra/*.sh`` the first time a test needs them, and stopped at the
end of the session if this session started them. ``CF_SKIP_INFRA=1`` skips those tests instead (for a
contributor without root); CI never sets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

INFRA = Path(__file__).parent / "infra"

# The backends the conformance suite runs on; later backends add themselves here.
BACKENDS = ["local", "slurm", "slurm-ssh", "ssh", "sge", "pbs", "slurm-s3", "kubernetes-s3"]


class Infra:
    def __init__(self, name: str) -> None:
        self.script = INFRA / f"{name}.sh"
        self.started = False

    def up(self) -> None:
        if os.environ.get("CF_SKIP_INFRA"):
            pytest.skip(f"CF_SKIP_INFRA is set: not starting {self.script.name}")
        was_up = subprocess.run(["bash", str(self.script), "status"], capture_output=True).returncode == 0
        if not was_up:
            result = subprocess.run(["bash", str(self.script), "up"], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.fail(f"{self.script} up failed:\n{result.stdout}\n{result.stderr}")
            self.started = True

    def down_if_started(self) -> None:
        if self.started:
            subprocess.run(["bash", str(self.script), "down"], capture_output=True)


@pytest.fixture(scope="session")
def slurm() -> Iterator[Infra]:
    infra = Infra("slurm")
    infra.up()
    yield infra
    infra.down_if_started()


@pytest.fixture(scope="session")
def sshd() -> Iterator[dict[str, str]]:
    infra = Infra("sshd")
    infra.up()
    out = subprocess.run(["bash", str(infra.script), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(line.replace("export ", "", 1).split("=", 1) for line in out.splitlines() if "=" in line)
    yield env
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
    out = subprocess.run(["bash", str(infra.script), "env"], capture_output=True, text=True, check=True).stdout
    yield dict(line.replace("export ", "", 1).split("=", 1) for line in out.splitlines() if "=" in line)
    infra.down_if_started()


@pytest.fixture(scope="session")
def s3() -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto in server mode, tests/infra/s3.sh) with the test bucket made. Its
    dummy credentials are in this process's environment for the session (boto3's chain finds them here, and
    SLURM jobs inherit them from sbatch)."""
    import boto3

    infra = Infra("s3")
    infra.up()
    out = subprocess.run(["bash", str(infra.script), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(line.replace("export ", "", 1).split("=", 1) for line in out.splitlines() if "=" in line)
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
    """The Kubernetes API stand-in (tests/k8s_standin.py: Jobs and pods, each pod's command run as a local
    process), in a subprocess; a kubeconfig for it (bearer token, namespace ``clustrix``)."""
    directory = tmp_path_factory.mktemp("k8s")
    token = os.urandom(16).hex()
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "k8s_standin.py"), "--token", token,
                               "--state", str(directory / "pods")], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = server.stdout.readline().strip()
    if not port.isdigit():
        server.kill()
        pytest.fail("the Kubernetes stand-in did not start")
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: standin\n"
        f"clusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{port}\n"
        f"users:\n- name: standin\n  user:\n    token: {token}\n"
        "contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n"
        "    namespace: clustrix\n")
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

    api = client.CoreV1Api(config.new_client_from_config(config_file=k8s_standin["kubeconfig"]))
    api.create_namespaced_secret(k8s_standin["namespace"], client.V1Secret(
        metadata=client.V1ObjectMeta(name="s3-credentials"),
        data={"access-key": _b64(s3["AWS_ACCESS_KEY_ID"]),
                                "secret-key": _b64(s3["AWS_SECRET_ACCESS_KEY"])}))
    return "s3-credentials"


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


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


ExecutorFactory = Callable[..., Any]

# Where the SSH test user (cfuser) keeps run directories on the "remote" side.
REMOTE_WORK_DIR = "/home/cfuser/cf-test-runs"


@pytest.fixture
def signals() -> Iterator[Path]:
    """A directory every test user can write: tasks (run as cfuser over SSH too) signal the test here."""
    path = Path(tempfile.mkdtemp(prefix="cf-signals-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ssh_options(env: dict[str, str]) -> dict[str, Any]:
    return {"host": env["CF_SSH_HOST"], "port": int(env["CF_SSH_PORT"]), "username": env["CF_SSH_USER"],
            "client_keys": [env["CF_SSH_KEY"]], "known_hosts": env["CF_SSH_KNOWN_HOSTS"],
            "python": "/usr/bin/python3", "work_dir": REMOTE_WORK_DIR}


def backend_options(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Executor options that select one backend of the conformance suite."""
    if backend == "local":
        return {"backend": "local"}
    if backend == "slurm":
        request.getfixturevalue("slurm")
        return {"backend": "slurm", "work_dir": str(tmp_path / "runs")}
    if backend == "slurm-ssh":
        request.getfixturevalue("slurm")
        return {"backend": "slurm", **ssh_options(request.getfixturevalue("sshd"))}
    if backend == "ssh":
        return {"backend": "ssh", **ssh_options(request.getfixturevalue("sshd"))}
    if backend == "sge":
        request.getfixturevalue("sge")
        return {"backend": "sge", "work_dir": str(tmp_path / "runs")}
    if backend == "pbs":
        request.getfixturevalue("pbs_commands")
        return {"backend": "pbs", "flavor": "torque", "work_dir": str(tmp_path / "runs")}
    if backend == "slurm-s3":
        request.getfixturevalue("slurm")
        return {"backend": "slurm", "work_dir": str(tmp_path / "runs"), **request.getfixturevalue("s3_options")}
    if backend == "kubernetes-s3":
        return {"backend": "kubernetes", **request.getfixturevalue("kubernetes_options"),
                **request.getfixturevalue("s3_options")}
    raise ValueError(backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_executor(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                  signals: Path) -> Iterator[ExecutorFactory]:
    """Builds executors for the selected backend; shuts every one down (cancelling) after the test,
    before the signal directory goes (so a task waiting on a signal file sees it)."""
    from clustrix_futures import ClusterPoolExecutor

    created: list[Any] = []
    base = backend_options(backend, request, tmp_path)

    def make(max_workers: Any = None, **options: Any) -> Any:
        executor = ClusterPoolExecutor(max_workers, **{**base, **options})
        created.append(executor)
        return executor

    yield make
    for executor in created:
        executor.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- scheduler command counting

SCHEDULER_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sacct", "qsub", "qstat", "qdel", "qacct")


class Shim:
    """Logs ``epoch command args...`` for every scheduler command, then runs the real one."""

    def __init__(self, directory: Path) -> None:
        self.log = directory / "calls.log"
        self.log.touch()
        for command in SCHEDULER_COMMANDS:
            real = shutil.which(command)
            if real is None:
                continue
            script = directory / command
            script.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {command} $*" >> {self.log}\nexec {real} "$@"\n')
            script.chmod(0o755)

    def calls(self, command: str) -> list[list[str]]:
        lines = self.log.read_text().splitlines()
        return [line.split()[2:] for line in lines if line.split()[1] == command]

    def times(self, command: str) -> list[float]:
        return [float(line.split()[0]) for line in self.log.read_text().splitlines() if line.split()[1] == command]


@pytest.fixture
def shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shim:
    """Counts scheduler commands run by this process (request the scheduler's fixture first)."""
    directory = tmp_path / "shim"
    directory.mkdir()
    made = Shim(directory)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return made


@pytest.fixture
def slurm_executor(slurm: Infra, tmp_path: Path, signals: Path) -> Iterator[ExecutorFactory]:
    """Builds SLURM executors (work_dir under tmp_path unless given); shuts them down after the test."""
    from clustrix_futures import ClusterPoolExecutor

    made: list[Any] = []

    def make(max_workers: Any = None, **options: Any) -> Any:
        options.setdefault("work_dir", str(tmp_path / "runs"))
        ex = ClusterPoolExecutor(max_workers, backend="slurm", **options)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(wait=True, cancel_futures=True)


def killed_client(tmp_path: Path, options: dict[str, Any], tasks: int, seconds: float) -> str:
    """Run a client process that submits ``tasks`` calls of ``workloads.sleep_then(seconds, i)`` through
    ``ClusterPoolExecutor(**options)``, waits for the first result, prints its run directory, and is then
    killed with SIGKILL. Returns that run directory, for a test to attach to."""
    import signal
    import sys
    import textwrap

    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import workloads
        from clustrix_futures import ClusterPoolExecutor
        ex = ClusterPoolExecutor(**{options!r})
        futures = [ex.submit(workloads.sleep_then, {seconds!r}, i) for i in range({tasks!r})]
        futures[0].result()
        print(ex.run_dir, flush=True)
        time.sleep(600)
    """))
    client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    run_dir = client.stdout.readline().strip()
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    return run_dir
