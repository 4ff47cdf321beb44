"""Faults on the real sshd of ``tests/infra/sshd.sh`` (127.0.0.1:2222, user cfuser), and what SLURM saw."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from typing import Any

from support.infra import INFRA

SSHD = INFRA / "sshd.sh"


def sshd_ctl(action: str) -> None:
    """``up``/``down``/``restart`` the sshd (this test's own: sessions of other clients drop too)."""
    subprocess.run(["bash", str(SSHD), action], check=True, capture_output=True, timeout=60)


def kill_connection(transport: Any) -> int:
    """Kill the sshd processes serving the transport's current connection (found by its client port): the
    connection drops as on a network cut. Other clients of this sshd are left alone."""
    port = transport._conn.get_extra_info("sockname")[1]
    listing = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :2222 and dport = :{port} )"],
                             capture_output=True, text=True).stdout
    pids = {int(pid) for pid in re.findall(r"pid=(\d+)", listing)}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # gone with the other one
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def own_connections() -> str:
    """This process's established connections to the sshd."""
    listing = subprocess.run(["ss", "-Htnp", "state", "established", "( dport = :2222 )"], capture_output=True,
                             text=True).stdout
    return "\n".join(line for line in listing.splitlines() if f"pid={os.getpid()}," in line)


def arrays_named(job_name: str) -> set[str]:
    """SLURM array jobs submitted under a job name (finished ones stay visible for MinJobAge)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-n", job_name, "-o", "%F"], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())
