"""Fault injection on the real SLURM: every future ends with its result or a specific error, within a bound.

Each test names its bound: the time within which every affected future must have ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from support import workloads
from support.executors import killed_client

from clustrix_futures import ClusterPoolExecutor, JobFailedError

INFRA = Path(__file__).parent.parent / "infra"
TESTS = Path(__file__).parent.parent


def unique_name() -> str:
    return f"cf-{uuid.uuid4().hex[:8]}"


def squeue_ids(job_name: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--array", f"--name={job_name}", "--format=%i"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_client_sigkill_then_attach_loses_nothing(slurm, tmp_path):
    """Bound: 120 s after attaching, all 200 futures have their results."""
    run_dir = killed_client(tmp_path, {"backend": "slurm", "work_dir": str(tmp_path / "runs"),
                                       "tasks_per_element": 10}, tasks=200, seconds=0.3)
    assert run_dir and Path(run_dir, "manifest.json").exists()
    ex = ClusterPoolExecutor.attach(run_dir)
    try:
        assert len(ex.futures) == 200
        assert [f.result(120) for f in ex.futures] == list(range(200))
        assert ex.submit(workloads.square, 3).result(120) == 9  # the attached executor takes new work
    finally:
        ex.shutdown()


@pytest.mark.parametrize("daemon", ["slurmctld", "slurmd"])
def test_daemon_restart_mid_run_fails_nothing(slurm_executor, signals, daemon):
    """Bound: 180 s after the restart, every future has its (correct) result."""
    ex = slurm_executor(tasks_per_element=2)
    started = signals / "started"
    futures = [ex.submit(workloads.touch_then_wait, str(started), str(signals / "release"))]
    futures += [ex.submit(workloads.sleep_then, 1.0, i) for i in range(20)]
    workloads.wait_for_file(str(started), 120)
    subprocess.run(["bash", str(INFRA / "slurm.sh"), "restart", daemon], check=True, capture_output=True)
    futures += [ex.submit(workloads.square, i) for i in range(10)]  # submitted right after the restart
    (signals / "release").touch()
    assert futures[0].result(180) == str(signals / "release")
    assert [f.result(180) for f in futures[1:21]] == list(range(20))
    assert [f.result(180) for f in futures[21:]] == [i * i for i in range(10)]


def test_submissions_while_slurmctld_is_down_are_sent_when_it_is_back(slurm_executor):
    """sbatch cannot reach the controller: the tasks wait on the client and are submitted once it is back.
    Bound: 120 s after the controller is back."""
    ex = slurm_executor()
    assert ex.submit(workloads.square, 1).result(120) == 1
    pid = int(Path("/var/run/clustrix-slurm/slurmctld.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP") and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        futures = [ex.submit(workloads.square, i) for i in range(5)]
        time.sleep(3)  # several cycles with an unreachable controller
        assert not any(f.done() for f in futures)
    finally:
        subprocess.run(["bash", str(INFRA / "slurm.sh"), "restart", "slurmctld"], check=True, capture_output=True)
    assert [f.result(120) for f in futures] == [i * i for i in range(5)]


def test_requeued_element_counts_as_in_progress(slurm_executor, signals):
    """``scontrol requeue`` of a running element: it runs again and its future gets the result. SLURM may requeue
    only where the monitor does not run preempted and node-failed elements again itself (retry_states without
    PREEMPTED and NODE_FAIL; by default they are in it, and elements are submitted --no-requeue).
    Bound: 180 s."""
    name = f"cf-requeue-{os.getpid()}"
    ex = slurm_executor(job_name=name, retry_states=["BOOT_FAIL"])
    started = signals / "started"
    future = ex.submit(workloads.touch_then_wait, str(started), str(signals / "release"))
    workloads.wait_for_file(str(started), 120)
    (element,) = squeue_ids(name)
    started.unlink()
    subprocess.run(["scontrol", "requeue", element], check=True)
    # SLURM holds a requeued job ~2 minutes (Reason=BeginTime); release it as an administrator would
    time.sleep(1)
    subprocess.run(["scontrol", "update", f"JobId={element}", "StartTime=now"], check=True)
    workloads.wait_for_file(str(started), 120)  # it ran again
    assert not future.done()
    (signals / "release").touch()
    assert future.result(120) == str(signals / "release")


def test_retry_states_run_an_element_again(slurm_executor, signals):
    """An element ending in a state listed in ``retry_states`` runs again (here an external scancel,
    standing for PREEMPTED or NODE_FAIL, which a one-node SLURM cannot produce). Bound: 120 s."""
    name = f"cf-retry-{os.getpid()}"
    ex = slurm_executor(job_name=name, retry_states=["CANCELLED"], retries=1, tasks_per_element=2)
    first, release = signals / "first", signals / "release"
    futures = [ex.submit(workloads.square, 6), ex.submit(workloads.touch_then_wait, str(first), str(release))]
    workloads.wait_for_file(str(first), 120)
    subprocess.run(["scancel", *squeue_ids(name)], check=True)
    first.unlink()
    workloads.wait_for_file(str(first), 120)  # the second task ran again...
    release.touch()
    assert futures[1].result(120) == str(release)
    assert futures[0].result(120) == 36  # ...and the first, finished before the scancel, kept its result


def test_retries_exhausted_fail_with_the_state(slurm_executor, signals):
    name = f"cf-noretry-{os.getpid()}"
    ex = slurm_executor(job_name=name, retry_states=["CANCELLED"], retries=0)
    started = signals / "started"
    future = ex.submit(workloads.touch_then_wait, str(started), str(signals / "never"))
    workloads.wait_for_file(str(started), 120)
    subprocess.run(["scancel", *squeue_ids(name)], check=True)
    with pytest.raises(JobFailedError) as caught:
        future.result(60)
    assert caught.value.state == "CANCELLED"


def test_corrupted_result_file_fails_only_its_tasks(slurm_executor, signals):
    """Bound: 60 s. The monitor keeps going: other elements and later submissions succeed."""
    ex = slurm_executor(keep_files=True)
    started = signals / "started"
    victim = ex.submit(workloads.touch_then_wait, str(started), str(signals / "release"))
    workloads.wait_for_file(str(started), 120)
    bystander = ex.submit(workloads.square, 4)
    assert bystander.result(60) == 16
    results = Path(ex.run_dir) / "results"
    victim_result = results / "0-0.res"
    victim_result.with_suffix(".tmp").write_bytes(b"\x10\x00\x00\x00this is not a pickle at all")
    victim_result.with_suffix(".tmp").rename(victim_result)
    with pytest.raises(JobFailedError, match="corrupted") as caught:
        victim.result(60)
    assert caught.value.state == "CORRUPTED_RESULT"
    (signals / "release").touch()
    assert ex.submit(workloads.square, 5).result(60) == 25


def test_partial_journal_is_not_read_while_the_element_runs(slurm_executor, signals):
    ex = slurm_executor(tasks_per_element=2)
    started = signals / "started"
    futures = [ex.submit(workloads.square, 3), ex.submit(workloads.touch_then_wait, str(started),
                                                          str(signals / "release"))]
    workloads.wait_for_file(str(started), 120)
    results = Path(ex.run_dir) / "results"
    assert [p.name for p in results.iterdir()] == ["0-0.part"]  # the first task's outcome is journalled...
    queries = ex.scheduler_commands.get("squeue", 0)
    deadline = time.monotonic() + 60  # two status queries later, the monitor has listed the results since
    while ex.scheduler_commands.get("squeue", 0) < queries + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ex.scheduler_commands.get("squeue", 0) >= queries + 2
    assert not futures[0].done()  # ...but not read before the element's file is complete
    (signals / "release").touch()
    assert futures[0].result(60) == 9 and futures[1].result(60)


def test_monitor_survives_failing_cycles(slurm_executor, signals):
    """The results directory turns into a file for a while: cycles fail, are logged and retried; once it
    is back, the future resolves. Bound: 60 s."""
    ex = slurm_executor()
    started = signals / "started"
    future = ex.submit(workloads.touch_then_wait, str(started), str(signals / "release"))
    workloads.wait_for_file(str(started), 120)
    results = Path(ex.run_dir) / "results"
    results.rename(results.with_name("results.away"))
    results.write_text("not a directory")
    time.sleep(2)
    results.unlink()
    results.with_name("results.away").rename(results)
    (signals / "release").touch()
    assert future.result(60) == str(signals / "release")


def test_monitor_that_cannot_continue_fails_every_future(slurm_executor, signals):
    """If cycles keep failing, every live future fails with MONITOR_FAILED instead of hanging.
    Bound: 60 s (20 failed cycles at poll_interval 0.2 s)."""
    name = f"cf-giveup-{os.getpid()}"
    ex = slurm_executor(poll_interval=0.2, job_name=name)
    started = signals / "started"
    futures = [ex.submit(workloads.touch_then_wait, str(started), str(signals / "never"))]
    workloads.wait_for_file(str(started), 120)
    results = Path(ex.run_dir) / "results"
    results.rename(results.with_name("results.away"))
    results.write_text("not a directory")
    try:
        with pytest.raises(JobFailedError) as caught:
            futures[0].result(60)
        assert caught.value.state == "MONITOR_FAILED"
        assert ex.run_dir in str(caught.value)
    finally:
        results.unlink()
        results.with_name("results.away").rename(results)
        subprocess.run(["scancel", f"--name={name}"], check=False)


def test_external_scancel_fails_the_future_with_cancelled(slurm_executor, signals):
    name = unique_name()
    ex = slurm_executor(job_name=name)
    started = signals / "started"
    future = ex.submit(workloads.touch_then_wait, str(started), str(signals / "never"))
    workloads.wait_for_file(str(started), 120)
    ids = squeue_ids(name)
    assert len(ids) == 1
    subprocess.run(["scancel", ids[0]], check=True)
    with pytest.raises(JobFailedError) as caught:
        future.result(60)
    assert caught.value.state == "CANCELLED"
    assert caught.value.job_id == ids[0]


def test_time_limit_fails_the_future_with_timeout_or_right_sizing_runs_it_again_longer(slurm_executor, tmp_path,
                                                                                          shim):
    """SLURM rounds limits up to whole minutes and checks them every ~30 s: this takes 60-90 s. Beside it, under
    retry_policy, an element of three tasks ends TIMEOUT in its second task and runs again with twice the time,
    that task and the third only. (The second task's second run finds the mark of its first and returns at once,
    so the test waits out one limit, not two; the doubled limit is read from the shim's sbatch lines.)"""
    ran = tmp_path / "ran"
    ran.mkdir()
    plain = slurm_executor(time="1")
    grown = slurm_executor(time="1", tasks_per_element=3, retry_policy={"TIMEOUT": {"time": "x2"}}, retries=1)
    future = plain.submit(workloads.sleep_then, 600)
    tasks = [grown.submit(workloads.slow_once, str(ran), i, 600 if i == 1 else 0) for i in range(3)]
    with pytest.raises(JobFailedError) as caught:
        future.result(240)
    assert caught.value.state == "TIMEOUT"
    assert "TIME LIMIT" in caught.value.log_tail
    assert [task.result(240) for task in tasks] == [0, 1, 2]
    assert workloads.runs_recorded(ran) == {0: 1, 1: 2, 2: 1}
    limits = [next(word for word in call if word.startswith("--time=")) for call in shim.calls("sbatch")]
    assert sorted(limits) == ["--time=00:02:00", "--time=1", "--time=1"], limits


def test_nonexistent_partition_fails_with_sbatch_error(slurm_executor):
    ex = slurm_executor(partition="nosuchpartition")
    futures = [ex.submit(workloads.square, i) for i in range(3)]
    for future in futures:
        with pytest.raises(JobFailedError, match="invalid partition specified: nosuchpartition") as caught:
            future.result(60)
        assert caught.value.state == "SUBMIT_FAILED"
    ok = ex.options(partition="debug").submit(workloads.square, 4)  # the slurm_executor still works
    assert ok.result(120) == 16


def test_hostile_strings_reach_slurm_intact(slurm_executor, tmp_path):
    name = "cf x'\";$(touch /tmp/cf-pwned)`touch /tmp/cf-pwned`"
    ex = slurm_executor(job_name=name, work_dir=str(tmp_path / "work dir; $(touch x) 'q'"))
    assert ex.submit(workloads.echo, "a b; $(rm -rf /)", "'\"").result(120) == (("a b; $(rm -rf /)", "'\""), {})
    assert not Path("/tmp/cf-pwned").exists()


def test_packed_element_that_dies_keeps_its_finished_tasks(slurm_executor):
    """Tasks journalled before a worker dies keep their results; only the running one and later fail."""
    ex = slurm_executor(tasks_per_element=3)
    futures = [ex.submit(workloads.square, 2), ex.submit(workloads.die, 7), ex.submit(workloads.square, 3)]
    assert futures[0].result(120) == 4
    with pytest.raises(JobFailedError) as caught:
        futures[1].result(120)
    assert caught.value.state == "FAILED" and "exit code 7" in str(caught.value)
    with pytest.raises(JobFailedError):
        futures[2].result(120)


def test_a_task_with_a_checkpoint_hook_resumes_after_its_warning_signal(slurm_executor, tmp_path, shim):
    """Under a 1-minute limit with the warning 50 s before it (SLURM looks every ~30 s: it comes 10-40 s in),
    a task that counts 45 s checkpoints at the warning and resumes its count in the element's next run, so it
    needs two runs or more; the task after it in the element runs once, in the run that reached it, and the one
    before it once, in the first. Beside it, with ``checkpoint_reruns=0``, a checkpoint fails its task saying
    so."""
    ran = tmp_path / "ran"
    ran.mkdir()
    ex = slurm_executor(time="1", signal_before_end=50, tasks_per_element=3)
    capped = slurm_executor(time="1", signal_before_end=50, checkpoint_reruns=0)
    before = ex.submit(workloads.square_and_record, str(ran), 1)
    counting = ex.submit(workloads.CountSeconds(str(ran), 2), 45)
    after = ex.submit(workloads.square_and_record, str(ran), 3)
    stopped = capped.submit(workloads.CountSeconds(str(ran), 4), 100)
    with pytest.raises(JobFailedError) as caught:
        stopped.result(600)
    assert caught.value.state == "CHECKPOINTED", caught.value
    assert "checkpointed again after 0 runs from checkpoints (checkpoint_reruns=0)" in str(caught.value)
    seconds, runs = counting.result(600)
    assert seconds == 45 and runs >= 2, (seconds, runs)
    assert before.result(60) == 1 and after.result(60) == 9
    assert workloads.runs_recorded(ran) == {1: 1, 2: runs, 3: 1, 4: 1}
    calls = shim.calls("sbatch")
    assert len(calls) == runs + 1 and all("--signal=B:USR1@50" in call for call in calls), calls
