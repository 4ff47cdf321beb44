"""Fault injection over SSH (SLURM through the real sshd on 127.0.0.1:2222 as cfuser).

Bounds: every future ends with its result within RESULT_WAIT (120 s) after the fault is over; a connection
that stays down fails the live futures with CONNECTION_LOST within 60 s.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest
from support import workloads
from support.executors import killed_client
from support.sshd import arrays_named, kill_connection, sshd_ctl
from support.waiting import RESULT_WAIT, wait_until

from clustrix_futures import ClusterPoolExecutor, JobFailedError


def test_sshd_restart_mid_run_loses_nothing(remote, executors, signals):
    release, job_name = signals / "release", f"cf-restart-{secrets.token_hex(4)}"
    ex = ClusterPoolExecutor(**remote, tasks_per_element=5, job_name=job_name)
    executors.append(ex)
    first = [ex.submit(workloads.square_after, str(release), x) for x in range(20)]
    wait_until(lambda: any(f.running() for f in first))
    try:
        sshd_ctl("down")
        second = [ex.submit(workloads.square, x) for x in range(20, 40)]  # submitted while sshd is down
        release.touch()  # the first elements finish, and write their results, while sshd is down
        time.sleep(1.5)
    finally:
        sshd_ctl("up")
    assert [f.result(RESULT_WAIT) for f in first + second] == [x * x for x in range(40)]
    assert ex._engine.transport._generation >= 2  # it did lose the connection and reconnect
    assert len(arrays_named(job_name)) == ex.scheduler_commands["sbatch"]  # no submission ran twice


def test_killed_connections_lose_nothing(remote, executors, signals):
    release, job_name = signals / "release", f"cf-kill-{secrets.token_hex(4)}"
    ex = ClusterPoolExecutor(**remote, tasks_per_element=4, job_name=job_name)
    executors.append(ex)
    transport = ex._engine.transport
    futures = [ex.submit(workloads.square_after, str(release), x) for x in range(24)]
    wait_until(lambda: any(f.running() for f in futures))
    for round_ in range(4):
        wait_until(lambda connections=round_ + 1: transport._generation >= connections)  # reconnected
        assert kill_connection(transport) > 0
        futures += [ex.submit(workloads.square, x) for x in range(24 + 4 * round_, 28 + 4 * round_)]
        if round_ == 1:
            release.touch()
        time.sleep(0.4)
    assert [f.result(RESULT_WAIT) for f in futures] == [x * x for x in range(40)]
    assert transport._generation >= 5
    assert len(arrays_named(job_name)) == ex.scheduler_commands["sbatch"]  # no submission ran twice


def test_connection_down_for_good_fails_live_futures(remote, sshd, signals):
    started, release = signals / "started", signals / "release"
    ex = ClusterPoolExecutor(**remote, reconnect_give_up=3)
    try:
        future = ex.submit(workloads.touch_then_wait, str(started), str(release))
        workloads.wait_for_file(str(started), RESULT_WAIT)
        sshd_ctl("down")
        failed = threading.Event()
        future.add_done_callback(lambda _: failed.set())
        assert failed.wait(60), "the future did not fail after the connection gave up"
        with pytest.raises(JobFailedError) as caught:
            future.result(0)
        assert caught.value.state == "CONNECTION_LOST"
        assert ex.run_dir in str(caught.value)
    finally:
        sshd_ctl("up")
        release.touch()  # let the job end
        ex.shutdown(wait=True)


def test_client_sigkill_then_attach_over_ssh_loses_nothing(remote, sshd, tmp_path):
    """Bound: 120 s after attaching, all 100 futures have their results."""
    options = {k: v for k, v in remote.items()}
    run_dir = killed_client(tmp_path, {"tasks_per_element": 10, **options}, tasks=100, seconds=0.3)
    assert run_dir.startswith("/home/cfuser/")
    attach_options = {k: v for k, v in options.items() if k != "backend"}
    ex = ClusterPoolExecutor.attach(run_dir, **attach_options)
    try:
        assert [f.result(RESULT_WAIT) for f in ex.futures] == list(range(100))
    finally:
        ex.shutdown()
