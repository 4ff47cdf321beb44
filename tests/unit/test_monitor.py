"""The monitor's fault paths, driven deterministically over the fake scheduler (no infrastructure).

Each path keeps its test against a real scheduler too (tests/faults/test_slurm_faults.py,
tests/test_host_backend.py); here the fake decides each element's fate, so the path is taken every time.
Work reaches the monitor only through ``submit``/``cancel``/``stop`` (support.monitor_driver).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import workloads
from support.fake_scheduler import FakeScheduler, Fate
from support.monitor_driver import driven
from support.waiting import wait_until

from clustrix_futures import JobFailedError
from clustrix_futures.schedulers.base import Limits

WAIT = 30  # seconds: a bound against hangs


def scheduler(**fates: Fate) -> object:
    """A factory of fake schedulers whose fates are given as ``b0_i0_a1=Fate(...)`` (batch, index, attempt)."""
    table = {tuple(int(part[1:]) for part in key.split("_")): fate for key, fate in fates.items()}
    return lambda run_dir: FakeScheduler(run_dir, table)


def failure(future: object) -> JobFailedError:
    with pytest.raises(JobFailedError) as caught:
        future.result(WAIT)  # type: ignore[attr-defined]
    return caught.value


def test_an_element_that_runs_resolves_its_futures(tmp_path: Path) -> None:
    with driven(tmp_path / "run", scheduler(), tasks_per_element=3) as driver:
        futures = [driver.submit(workloads.square, x) for x in range(3)]
        assert [f.result(WAIT) for f in futures] == [0, 1, 4]
    assert len(driver.scheduler.submissions) == 1 and driver.scheduler.finals_asked == []


def test_the_worker_can_run_as_a_subprocess(tmp_path: Path) -> None:
    with driven(tmp_path / "run", lambda run_dir: FakeScheduler(run_dir, in_subprocess=True),
                tasks_per_element=2) as driver:
        futures = [driver.submit(workloads.square_and_record, str(tmp_path), x) for x in range(2)]
        assert [f.result(WAIT) for f in futures] == [0, 1]
        assert workloads.pid() not in {int(line) for line in (tmp_path / "ran-0").read_text().split()}


def test_a_retry_state_runs_the_element_again_and_skips_its_finished_tasks(tmp_path: Path) -> None:
    """Attempt 1 dies (NODE_FAIL) after task 0; attempt 2 runs task 1 only."""
    fates = scheduler(b0_i0_a1=Fate(state="NODE_FAIL", stops_before=(1,)))
    with driven(tmp_path / "run", fates, tasks_per_element=2, retries=1) as driver:
        futures = [driver.submit(workloads.square_and_record, str(tmp_path), x) for x in (3, 4)]
        assert [f.result(WAIT) for f in futures] == [9, 16]
    assert workloads.runs_recorded(tmp_path) == {3: 1, 4: 1}
    first, again = driver.scheduler.submissions
    assert (first.size, again.size, again.start, again.batch) == (1, 1, 0, 0)  # one element of two tasks, again


def test_retries_exhausted_fail_with_the_state_and_the_log_tail(tmp_path: Path) -> None:
    fates = scheduler(b0_i0_a1=Fate(state="NODE_FAIL", stops_before=(0,), stderr=b"node went away"))
    with driven(tmp_path / "run", fates, retries=0) as driver:
        error = failure(driver.submit(workloads.square, 2))
    assert error.state == "NODE_FAIL" and "node went away" in (error.log_tail or "")
    assert len(driver.scheduler.submissions) == 1


def test_an_element_gone_completed_without_a_result_gets_the_grace_period(tmp_path: Path) -> None:
    """The result file shows up late (a lagging shared filesystem): within grace_period, the future gets it."""
    with driven(tmp_path / "run", scheduler(b0_i0_a1=Fate(ran=False)), grace_period=60) as driver:
        future = driver.submit(workloads.square, 5)
        wait_until(lambda: driver.scheduler.finals_asked, WAIT, "the monitor asks the vanished element's state")
        assert not future.done()
        asyncio.run(driver.scheduler.run_element(0, 0))  # the late result
        assert future.result(WAIT) == 25


def test_past_the_grace_period_a_missing_result_fails_the_tasks(tmp_path: Path) -> None:
    with driven(tmp_path / "run", scheduler(b0_i0_a1=Fate(ran=False)), grace_period=0.3) as driver:
        error = failure(driver.submit(workloads.square, 5))
    assert error.state == "COMPLETED"


def test_a_corrupted_result_keeps_its_good_frames_and_fails_the_rest(tmp_path: Path) -> None:
    with driven(tmp_path / "run", scheduler(b0_i0_a1=Fate(corrupt=True)), tasks_per_element=3) as driver:
        futures = [driver.submit(workloads.square, x) for x in (2, 3, 4)]
        assert [f.result(WAIT) for f in futures[:2]] == [4, 9]
        error = failure(futures[2])
        assert error.state == "CORRUPTED_RESULT" and "corrupted" in str(error)
        assert driver.submit(workloads.square, 6).result(WAIT) == 36  # the monitor goes on


def test_an_element_the_scheduler_forgot_is_lost(tmp_path: Path) -> None:
    fates = scheduler(b0_i0_a1=Fate(ran=False, forgotten=True))
    with driven(tmp_path / "run", fates, grace_period=0.3) as driver:
        error = failure(driver.submit(workloads.square, 5))
    assert error.state == "LOST" and "no longer knows it" in str(error)


def test_a_timeout_under_retry_policy_runs_the_element_again_with_twice_the_time(tmp_path: Path) -> None:
    """TIMEOUT takes the right-sizing path the real SLURM tests take for OUT_OF_MEMORY (tests/test_slurm.py):
    attempt 1 ends TIMEOUT after task 0, attempt 2 asks for twice the time and runs task 1 only; attempt 2 of
    the second element ends TIMEOUT again at the partition's limit, and its task fails with every run listed."""
    fates = scheduler(b0_i0_a1=Fate(state="TIMEOUT", stops_before=(1,)),
                      b1_i0_a1=Fate(state="TIMEOUT", stops_before=(2,)), b1_i0_a2=Fate(state="TIMEOUT", ran=False))
    with driven(tmp_path / "run", fates, tasks_per_element=2, time="00:20:00", retries=3,
                retry_policy={"TIMEOUT": {"time": "x2"}}) as driver:
        driver.scheduler.partition_limits = Limits(seconds=1800)
        futures = [driver.submit(workloads.square_and_record, str(tmp_path), x) for x in (3, 4)]
        assert [f.result(WAIT) for f in futures] == [9, 16]
        error = failure(driver.submit(workloads.square_and_record, str(tmp_path), 5))
    times = [submission.resources["time"] for submission in driver.scheduler.submissions]
    assert times == ["00:20:00", "00:30:00", "00:20:00", "00:30:00"]  # 40 minutes asked, the limit 30
    assert workloads.runs_recorded(tmp_path) == {3: 1, 4: 1}
    assert error.state == "TIMEOUT"
    assert "retry_policy stopped (nothing it asks for can grow: 00:30:00 is the partition's limit)" in str(error)
    assert "runs: time=00:20:00: TIMEOUT; time=00:30:00: TIMEOUT" in str(error), str(error)


def test_right_sizing_grows_a_per_cpu_default_memory_by_the_cpus_asked(tmp_path: Path) -> None:
    """No mem asked, a partition default of 500 MB per CPU, 2 CPUs: the element had 1000 MB, and runs again
    with 2000M."""
    fates = scheduler(b0_i0_a1=Fate(state="OUT_OF_MEMORY", stops_before=(0,)))
    with driven(tmp_path / "run", fates, tasks_per_element=1, cpus=2, retries=1,
                retry_policy={"OUT_OF_MEMORY": {"mem": "x2"}}) as driver:
        driver.scheduler.partition_limits = Limits(default_mem_per_cpu_mb=500)
        assert driver.submit(workloads.square, 3).result(WAIT) == 9
    assert [submission.resources["mem"] for submission in driver.scheduler.submissions] == [None, "2000M"]
