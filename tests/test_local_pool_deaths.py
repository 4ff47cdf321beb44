"""The local pool sees a worker's death from the process itself, and no worker outlives an interrupted client.

Real processes only: a task forks a daemon child (which inherits the worker's socket) and then kills its own
worker; a client subprocess is sent SIGINT twice while its tasks run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clustrix_futures import ClusterPoolExecutor, JobFailedError

DEADLINE = 30  # seconds: the death must be seen well within this


def fork_daemon_then_die(pid_file: str, how: str) -> None:
    """Fork a child that keeps the inherited socket open for a minute, then end this worker."""
    child = os.fork()
    if child == 0:
        os.setsid()
        time.sleep(60)
        os._exit(0)
    Path(pid_file).write_text(str(child))
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_task_that_forks_a_daemon_and_kills_its_worker_fails_its_future_quickly(tmp_path: Path, how: str):
    pid_file = tmp_path / "child"
    started = time.monotonic()
    try:
        with ClusterPoolExecutor(backend="local", max_workers=1) as ex:
            future = ex.submit(fork_daemon_then_die, str(pid_file), how)
            with pytest.raises(JobFailedError) as info:
                future.result(timeout=DEADLINE)
            assert info.value.state == "WORKER_DIED"
            assert ("exited with code 3" if how == "exit" else "SIGKILL") in str(info.value)
            assert time.monotonic() - started < 15
            assert ex.submit(pow, 2, 5).result(timeout=DEADLINE) == 32  # a replacement worker serves the next
        child = int(pid_file.read_text())
        assert alive(child), "the daemon child should still hold the socket (else this test proves nothing)"
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


CLIENT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from clustrix_futures import ClusterPoolExecutor

    def hold(directory):
        Path(directory, str(os.getpid())).write_text("")
        time.sleep(300)

    directory = sys.argv[1]
    with ClusterPoolExecutor(backend="local", max_workers=2) as ex:
        futures = [ex.submit(hold, directory) for _ in range(2)]
        while len(os.listdir(directory)) < 2:
            time.sleep(0.05)
        print("ready", flush=True)
        time.sleep(300)
""")


def test_a_second_ctrl_c_while_shutting_down_ends_every_worker(tmp_path: Path):
    workers = tmp_path / "workers"
    workers.mkdir()
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(workers)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        pids = [int(name) for name in os.listdir(workers)]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        client.send_signal(signal.SIGINT)  # the first: the with-block's shutdown waits for the running tasks
        time.sleep(1.5)
        assert client.poll() is None and all(alive(pid) for pid in pids), "shutdown should wait for the tasks"
        client.send_signal(signal.SIGINT)  # the second: the pool kills its workers
        _, err = client.communicate(timeout=DEADLINE)
        assert "KeyboardInterrupt" in err
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if alive(pid)], "workers outlived the interrupted client"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for name in os.listdir(workers):
            if alive(int(name)):
                os.kill(int(name), signal.SIGKILL)
