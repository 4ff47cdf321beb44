"""The real test infrastructure: each piece is brought up by its script in ``tests/infra/`` (facts the scripts
rely on: ``tests/infra/README.md``).

A piece is brought up the first time a test needs it and stopped at the end of the session only if this
session started it. ``CF_SKIP_INFRA=1`` skips the tests that need one instead (for a contributor without
root); CI never sets it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

INFRA = Path(__file__).parent.parent / "infra"

# Where the SSH test user (cfuser) keeps run directories on the "remote" side.
REMOTE_WORK_DIR = "/home/cfuser/cf-test-runs"


class Infra:
    """One script of ``tests/infra``: ``up`` unless its ``status`` says it is up already."""

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

    def env(self) -> dict[str, str]:
        """The ``export NAME=value`` lines of the script's ``env`` action, as a mapping."""
        out = subprocess.run(["bash", str(self.script), "env"], capture_output=True, text=True, check=True).stdout
        return dict(line.replace("export ", "", 1).split("=", 1) for line in out.splitlines() if "=" in line)

    def down_if_started(self) -> None:
        if self.started:
            subprocess.run(["bash", str(self.script), "down"], capture_output=True)


def ssh_options(env: dict[str, str]) -> dict[str, Any]:
    """Executor options that reach the sshd of ``tests/infra/sshd.sh`` as cfuser (``env``: its ``env``)."""
    return {"host": env["CF_SSH_HOST"], "port": int(env["CF_SSH_PORT"]), "username": env["CF_SSH_USER"],
            "client_keys": [env["CF_SSH_KEY"]], "known_hosts": env["CF_SSH_KNOWN_HOSTS"],
            "python": "/usr/bin/python3", "work_dir": REMOTE_WORK_DIR}


def kubeconfig_text(port: str, token: str) -> str:
    """A kubeconfig for the Kubernetes stand-in on ``port`` (bearer ``token``, namespace ``clustrix``)."""
    return ("apiVersion: v1\nkind: Config\ncurrent-context: standin\n"
            f"clusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{port}\n"
            f"users:\n- name: standin\n  user:\n    token: {token}\n"
            "contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n"
            "    namespace: clustrix\n")
