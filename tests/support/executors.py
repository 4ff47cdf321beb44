"""Executors per backend: the options that select each backend of the conformance suite, the infrastructure
each one needs (the source of the pytest markers), and a client process killed mid-run for attach tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.infra import ssh_options

ExecutorFactory = Callable[..., Any]

# The backends the conformance suite runs on, and the infrastructure (pytest marker names) each one needs;
# later backends add themselves here. ``ssh-local`` is the ``ssh`` backend without a host (this machine).
BACKEND_INFRA: dict[str, tuple[str, ...]] = {
    "local": (),
    "slurm": ("slurm",),
    "slurm-ssh": ("slurm", "ssh"),
    "ssh": ("ssh",),
    "ssh-local": (),
    "sge": ("sge",),
    "pbs": ("pbs", "slurm"),
    "slurm-s3": ("slurm", "s3"),
    "kubernetes-s3": ("kubernetes", "s3"),
}
BACKENDS = list(BACKEND_INFRA)

# The fixture that brings up each piece of infrastructure, and the marker a test that requests it carries.
FIXTURE_MARKERS = {"slurm": "slurm", "sshd": "ssh", "sge": "sge", "pbs": "pbs", "s3": "s3", "k8s_standin": "kubernetes",
                   "other_account": "security"}


def backend_options(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Executor options that select one backend of the conformance suite (bringing up what it needs)."""
    missing = [name for name in BACKEND_INFRA[backend] if request.node.get_closest_marker(name) is None]
    assert not missing, f"{request.node.nodeid} uses {backend} but lacks the markers {missing}: see infra_markers"
    runs = {"work_dir": str(tmp_path / "runs")}
    if backend == "local":
        return {"backend": "local"}
    if backend == "slurm":
        request.getfixturevalue("slurm")
        return {"backend": "slurm", **runs}
    if backend == "slurm-ssh":
        request.getfixturevalue("slurm")
        return {"backend": "slurm", **ssh_options(request.getfixturevalue("sshd"))}
    if backend == "ssh":
        return {"backend": "ssh", **ssh_options(request.getfixturevalue("sshd"))}
    if backend == "ssh-local":
        return {"backend": "ssh", **runs}
    if backend == "sge":
        request.getfixturevalue("sge")
        return {"backend": "sge", **runs}
    if backend == "pbs":
        request.getfixturevalue("pbs_commands")
        return {"backend": "pbs", "flavor": "torque", **runs}
    if backend == "slurm-s3":
        request.getfixturevalue("slurm")
        return {"backend": "slurm", **runs, **request.getfixturevalue("s3_options")}
    if backend == "kubernetes-s3":
        return {"backend": "kubernetes", **request.getfixturevalue("kubernetes_options"),
                **request.getfixturevalue("s3_options")}
    raise ValueError(backend)


def infra_markers(fixturenames: list[str], params: dict[str, Any]) -> set[str]:
    """The infrastructure markers of a test: from the fixtures it requests, and from a ``backend`` (conformance)
    or ``host_options`` parameter naming a backend of :data:`BACKEND_INFRA`, or a ``where`` parameter (the CLI
    tests' cluster: always SLURM, reached as the backend it names)."""
    markers = {FIXTURE_MARKERS[name] for name in fixturenames if name in FIXTURE_MARKERS}
    for name in ("backend", "host_options", "where"):
        if name in params:
            markers.update(BACKEND_INFRA[str(params[name])])
    if "where" in params:
        markers.add("slurm")
    return markers


def killed_client(tmp_path: Path, options: dict[str, Any], tasks: int, seconds: float) -> str:
    """Run a client process that submits ``tasks`` calls of ``workloads.sleep_then(seconds, i)`` through
    ``ClusterPoolExecutor(**options)``, waits for the first result, prints its run directory, and is then
    killed with SIGKILL. Returns that run directory, for a test to attach to."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from support import workloads
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
