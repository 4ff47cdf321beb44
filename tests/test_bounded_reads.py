"""Log tails read only their last bytes: a 1 GB (sparse) stderr log costs the client no 1 GB.

A task makes its element's stderr log 1 GB long and ends with a marker, then its element fails. In a client
subprocess (so its memory is its own), the failed future's ``log_tail`` and ``clustrix-futures logs`` both show
the marker while the process's peak RSS (VmHWM) grows by less than 50 MB: on this machine (``ssh`` backend
without a host: files read here) and over the real sshd (SFTP: open, seek to size - N, read N).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.executors import backend_options

LIMIT_KB = 50 * 1024
CLIENT = textwrap.dedent("""
    import contextlib, io, json, os, sys
    from clustrix_futures import ClusterPoolExecutor, JobFailedError
    from clustrix_futures.tools import cli

    def peak_kb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    def huge_stderr():
        import os
        os.ftruncate(2, 1 << 30)  # sparse: 1 GB of holes
        os.lseek(2, 0, os.SEEK_END)
        os.write(2, b"THE-END-OF-A-1GB-LOG\\n")
        os._exit(3)

    options, cli_args = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    ex = ClusterPoolExecutor(**options, tasks_per_element=1)
    assert ex.submit(pow, 2, 5).result(timeout=120) == 32  # everything imported and connected: the baseline
    before = peak_kb()
    try:
        ex.submit(huge_stderr).result(timeout=120)
        raise SystemExit("the task did not fail")
    except JobFailedError as exc:
        tail, state = exc.log_tail, exc.state
    after_future = peak_kb()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["logs", str(ex.run_dir), "1", *cli_args])
    after_logs = peak_kb()
    ex.shutdown()
    print(json.dumps({"tail": tail, "state": state, "future_kb": after_future - before,
                      "logs_kb": after_logs - after_future, "code": code, "logs": out.getvalue()[-2000:]}))
""")


@pytest.fixture(params=["ssh-local", "ssh"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return backend_options(request.param, request, tmp_path)


def cli_args(options: dict[str, Any]) -> list[str]:
    args = ["--work-dir", options["work_dir"]]
    for key in ("host", "port", "username", "client_keys", "known_hosts", "python"):
        if key in options:
            args += ["--option", f"{key}={json.dumps(options[key])}"]
    return args


def test_a_1gb_log_tail_is_shown_without_reading_the_file(where):
    done = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(where), json.dumps(cli_args(where))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print({key: report[key] for key in ("future_kb", "logs_kb")})
    assert report["state"] == "FAILED" and "THE-END-OF-A-1GB-LOG" in report["tail"], report
    assert report["code"] == 0 and "THE-END-OF-A-1GB-LOG" in report["logs"], report
    assert report["future_kb"] < LIMIT_KB, f"the failed future's log tail grew the client by {report['future_kb']} kB"
    assert report["logs_kb"] < LIMIT_KB, f"`clustrix-futures logs` grew the client by {report['logs_kb']} kB"
