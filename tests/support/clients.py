"""Client processes: a script run against one backend's options, as a user's program would run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def run_client(tmp_path: Path, options: dict[str, Any], body: str, timeout: float = 300,
               name: str = "client.py") -> subprocess.CompletedProcess[str]:
    """Run ``body`` (dedented) as a script's ``__main__``, after ``OPTIONS = options`` (the backend's executor
    options) and ``from clustrix_futures import ClusterPoolExecutor``; its exit status, stdout and stderr.

    It runs in the checkout's root, as pytest does: jobs start where they were submitted, so a job's
    ``python -m`` finds this checkout's package first, as the tests' own executors do."""
    script = tmp_path / name
    script.write_text(f"from clustrix_futures import ClusterPoolExecutor\nOPTIONS = {options!r}\n"
                      + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).parent.parent.parent)


def run_clients(tmp_path: Path, options: dict[str, Any], body: str, runs: int, at_once: int,
                timeout: float = 300) -> list[subprocess.CompletedProcess[str]]:
    """``runs`` clients of the same ``body`` (as :func:`run_client`, scripts ``client0.py``...), ``at_once``
    of them running together: most of a client's life is waiting on its jobs, so the suite waits once."""
    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(lambda run: run_client(tmp_path, options, body, timeout, f"client{run}.py"),
                             range(runs)))
