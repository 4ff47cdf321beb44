"""The Grid Engine backend against the real Son of Grid Engine 8.1.9 brought up by tests/infra/sge.sh, and its
parsers on output recorded from that Grid Engine (tests/data/sge-*).

Scheduler commands are counted with the conftest's PATH shim. Arrays stay small: SGE dispatches a 100-task
array in about 15 s here, so many tasks are packed into few elements.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
from support import workloads

from clustrix_futures import JobFailedError
from clustrix_futures.remote.transport import LocalTransport
from clustrix_futures.schedulers.base import ENDED, QUEUED, RUNNING, ArraySubmission, BackendContext, Limits
from clustrix_futures.schedulers.command import CommandScheduler
from clustrix_futures.schedulers.sge import SgeBackend

DATA = Path(__file__).parent / "data"


@pytest.fixture(params=["sge"])
def backend(request: pytest.FixtureRequest) -> str:
    """The conftest's make_executor (and shim, requested after it) for this backend only."""
    return str(request.param)


def unique_name() -> str:
    return f"cf-{uuid.uuid4().hex[:8]}"


def tasks_of(job_name: str) -> list[tuple[str, str, str]]:
    """(job, task range, state) of every qstat entry of the jobs named ``job_name``."""
    root = ET.fromstring(subprocess.run(["qstat", "-xml"], capture_output=True, text=True, check=True).stdout)
    return [(j.findtext("JB_job_number", ""), j.findtext("tasks", ""), j.findtext("state", ""))
            for j in root.iter("job_list") if j.findtext("JB_name") == job_name]


def element_identity(tag: str) -> tuple[str, str, str]:
    """Runs on the node: what the element saw, printed to its stdout as well."""
    seen = (tag, os.environ["CLUSTRIX_ARRAY_INDEX"], os.environ["SGE_TASK_ID"])
    print("element", *seen)
    return seen


# ------------------------------------------------------------------------ against the real Grid Engine


def test_thousand_submits_make_a_handful_of_qsub_calls(make_executor, shim):
    ex = make_executor(tasks_per_element=100)
    futures = [ex.submit(workloads.square, i) for i in range(1000)]
    assert [f.result(300) for f in futures] == [i * i for i in range(1000)]
    assert 1 <= len(shim.calls("qsub")) <= 5


def test_element_i_runs_task_i_plus_one_and_logs_under_its_own_index(make_executor):
    """Grid Engine numbers tasks from 1: task I + 1 must run element I and write logs/B-I.*."""
    ex = make_executor(keep_files=True, tasks_per_element=1)
    futures = [ex.submit(element_identity, str(i)) for i in range(4)]
    assert [f.result(120) for f in futures] == [(str(i), str(i), str(i + 1)) for i in range(4)]
    ex.shutdown()
    logs = Path(ex.run_dir) / "logs"
    assert {p.name for p in logs.iterdir()} == {f"0-{i}.{s}" for i in range(4) for s in ("out", "err")}
    for i in range(4):
        assert (logs / f"0-{i}.out").read_text().strip() == f"element {i} {i} {i + 1}"


def test_external_qdel_fails_the_future_with_killed(make_executor, signals):
    name = unique_name()
    ex = make_executor(job_name=name)
    started = signals / "started"
    future = ex.submit(workloads.touch_then_wait, str(started), str(signals / "never"))
    workloads.wait_for_file(str(started), 120)
    (job, task, state), = tasks_of(name)
    assert task == "1" and state in ("r", "t")  # t: transferring, until the exec host reports
    subprocess.run(["qdel", job, "-t", "1"], check=True, capture_output=True)
    with pytest.raises(JobFailedError, match="qdel") as caught:
        future.result(60)
    assert caught.value.state == "KILLED"
    assert caught.value.job_id == f"{job}_0"


def test_time_limit_fails_the_future_with_timeout(make_executor):
    ex = make_executor(time="0:05")  # five seconds: h_rt=5
    future = ex.submit(workloads.sleep_then, 600)
    with pytest.raises(JobFailedError, match="h_rt") as caught:
        future.result(120)
    assert caught.value.state == "TIMEOUT"


def test_dying_element_fails_with_its_exit_status(make_executor):
    ex = make_executor(tasks_per_element=3)
    futures = [ex.submit(workloads.square, 2), ex.submit(workloads.die, 7), ex.submit(workloads.square, 3)]
    assert futures[0].result(120) == 4
    with pytest.raises(JobFailedError, match="exit status 7") as caught:
        futures[1].result(120)
    assert caught.value.state == "FAILED"
    with pytest.raises(JobFailedError):
        futures[2].result(120)


def test_rejected_submission_fails_the_futures_with_qsub_stderr(make_executor):
    ex = make_executor(partition="nosuchqueue")
    futures = [ex.submit(workloads.square, i) for i in range(3)]
    for future in futures:
        with pytest.raises(JobFailedError, match='unknown queue "nosuchqueue"') as caught:
            future.result(60)
        assert caught.value.state == "SUBMIT_FAILED"
    assert ex.options(partition="all.q").submit(workloads.square, 4).result(120) == 16


def test_throttle_resources_and_a_hostile_name_reach_qsub(make_executor, shim, tmp_path):
    ex = make_executor(2, pe="smp", cpus=2, mem="256M", time="10", partition="all.q", job_name="cf x'y;$(z)",
                  work_dir=str(tmp_path / "work dir; $(touch x) 'q'"))
    assert [f.result(120) for f in [ex.submit(workloads.square, i) for i in range(4)]] == [0, 1, 4, 9]
    argv = shim.calls("qsub")[0]
    assert argv[argv.index("-tc") + 1] == "2"
    assert argv[argv.index("-pe") + 1:argv.index("-pe") + 3] == ["smp", "2"]
    assert {"h_vmem=128M", "h_rt=600"} <= set(argv)
    assert argv[argv.index("-q") + 1] == "all.q"
    assert argv[argv.index("-N") + 1] == "cf_x'y;$(z)"  # whitespace is refused in names; the rest is argv


def test_cancel_of_a_queued_element_deletes_its_task(make_executor, shim, signals):
    name = unique_name()
    ex = make_executor(1, job_name=name)
    started = signals / "started"
    futures = [ex.submit(workloads.touch_then_wait, str(started), str(signals / "release")),
               ex.submit(workloads.square, 5)]
    workloads.wait_for_file(str(started), 120)
    assert futures[1].cancel()
    deadline = time.monotonic() + 30
    while [task for _, task, _ in tasks_of(name)] != ["1"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [task for _, task, _ in tasks_of(name)] == ["1"]  # task 2 (element 1) is gone, task 1 runs
    assert any(call[-2:] == ["-t", "2-2"] for call in shim.calls("qdel"))
    (signals / "release").touch()
    assert futures[0].result(120)


def test_max_array_size_is_read_from_qconf(make_executor):
    ex = make_executor()
    conf = subprocess.run(["qconf", "-sconf", "global"], capture_output=True, text=True, check=True).stdout
    expected = next(int(line.split()[1]) for line in conf.splitlines() if line.startswith("max_aj_tasks"))
    assert ex._engine.monitor.env.max_array_size == expected


def qconf(*args: str) -> str:
    return subprocess.run(["qconf", *args], capture_output=True, text=True, check=True).stdout


def sge_limits(partition: Optional[str]) -> Limits:
    """The limits the Grid Engine scheduler reads for ``partition``, running its command here."""
    scheduler = CommandScheduler(sge_backend(), LocalTransport(), lambda batch, index, stream: "")
    return asyncio.run(scheduler.limits(partition))


@contextlib.contextmanager
def queue_of_its_own(tmp_path: Path, **limits: str) -> Iterator[str]:
    """A cluster queue for one test: all.q's configuration under a new name, with ``limits`` (``h_rt="6"``...);
    deleted after. Jobs sent to it (``partition``) are the only ones that see its limits."""
    name = f"cf{uuid.uuid4().hex[:6]}.q"
    kept = [line for line in qconf("-sq", "all.q").splitlines() if line.split() and line.split()[0] not in
            {"qname", *limits}]
    conf = tmp_path / name
    conf.write_text("\n".join([f"qname {name}", *kept, *(f"{k} {v}" for k, v in limits.items())]) + "\n")
    qconf("-Aq", str(conf))
    try:
        yield name
    finally:
        deadline = time.monotonic() + 60
        while subprocess.run(["qconf", "-dq", name], capture_output=True).returncode and time.monotonic() < deadline:
            time.sleep(0.5)  # refused while a job of it is still in the queue


def test_queue_limits_are_read_from_qconf(sge, tmp_path):
    """h_vmem and h_rt set on all.q for the test (its configuration restored exactly after): the limits of an
    element sent to all.q, and of one sent to no queue, which Grid Engine may put in any queue: all.q is the only
    one tests/infra/sge.sh makes (the next test's own queue lives only during that test)."""
    original = qconf("-sq", "all.q")
    kept = tmp_path / "all.q"
    kept.write_text(original)
    try:
        qconf("-mattr", "queue", "h_vmem", "300M", "all.q")
        qconf("-mattr", "queue", "h_rt", "01:00:00", "all.q")
        assert sge_limits("all.q") == Limits(mem_mb=300, seconds=3600, default_mem_mb=300, default_seconds=3600)
        assert sge_limits(None) == sge_limits("all.q")
    finally:
        qconf("-Mq", str(kept))
    assert qconf("-sq", "all.q") == original


def test_right_sizing_stops_at_the_queue_s_time_limit(make_executor, tmp_path):
    """Grid Engine enforces h_rt (TIMEOUT); the element's time grows fourfold, but only to its queue's h_rt of 6 s,
    read from ``qconf -sq``: asked for more, Grid Engine would never dispatch it."""
    with queue_of_its_own(tmp_path, h_rt="00:00:06") as queue:
        assert sge_limits(queue).seconds == 6
        ex = make_executor(time="0:03", partition=queue, tasks_per_element=1,
                           retry_policy={"TIMEOUT": {"time": 4}}, retries=5)
        with pytest.raises(JobFailedError) as failed:
            ex.submit(workloads.sleep_then, 600).result(timeout=120)
        ex.shutdown(wait=True, cancel_futures=True)
    assert failed.value.state == "TIMEOUT"
    assert "00:00:06 is the partition's limit" in str(failed.value), str(failed.value)
    assert "runs: time=00:00:03: TIMEOUT; time=00:00:06: TIMEOUT" in str(failed.value)


# ------------------------------------------------------------------------ commands and parsers


def sge_backend() -> SgeBackend:
    return SgeBackend(BackendContext("/usr/bin/python3", "/runs/r1"))


def submission(size: int, start: int = 0, throttle=None, **resources) -> ArraySubmission:
    return ArraySubmission(3, size, "/runs/r1/batches/3.sh", "/runs/r1/logs/3-{index}.out",
                           "/runs/r1/logs/3-{index}.err", throttle, resources, start=start)


def test_submit_runs_the_launcher_with_the_log_paths_split_at_the_index():
    argv = sge_backend().submit_argv(submission(4, throttle=2), "/runs/r1/batches/3.sh")
    assert argv[:6] == ["qsub", "-terse", "-t", "1-4", "-tc", "2"]
    assert argv[argv.index("-wd") + 1] == "/runs/r1"
    tail = argv[argv.index("-b"):]
    assert tail[:6] == ["-b", "y", "-shell", "no", "/bin/bash", "-c"]
    assert tail[7:] == ["clustrix-element", "/runs/r1/logs/3-", ".out", "/runs/r1/logs/3-", ".err",
                        "/runs/r1/batches/3.sh"]


def test_a_resubmitted_element_is_its_own_task():
    argv = sge_backend().submit_argv(submission(1, start=4), "/runs/r1/batches/3.sh")
    assert argv[argv.index("-t") + 1] == "5-5"


def test_launcher_sets_the_index_and_logs(tmp_path):
    """The launcher itself, run by bash as Grid Engine runs it for task 3."""
    from clustrix_futures.schedulers.sge import LAUNCHER

    script = tmp_path / "job.sh"
    script.write_text('echo "out $CLUSTRIX_ARRAY_INDEX"; echo "err $SGE_TASK_ID" >&2\n')
    logs = tmp_path / "logs"
    logs.mkdir()
    subprocess.run(["/bin/bash", "-c", LAUNCHER, "x", f"{logs}/7-", ".out", f"{logs}/7-", ".err", str(script)],
                   env={"SGE_TASK_ID": "3", "PATH": os.environ["PATH"]}, check=True)
    assert (logs / "7-2.out").read_text() == "out 2\n"
    assert (logs / "7-2.err").read_text() == "err 3\n"


def test_qstat_xml_parses_ranges_holds_and_errors():
    report = sge_backend().parse_status((DATA / "sge-qstat.xml").read_text(), ["58", "59", "60"])
    assert report.phases == {
        ("58", 0): RUNNING, ("58", 1): RUNNING,                           # tasks 1 and 2 running
        ("58", 2): QUEUED, ("58", 3): QUEUED, ("58", 5): QUEUED,          # "3,4,6": task 5 was deleted
        ("59", 0): QUEUED, ("59", 2): QUEUED, ("59", 4): QUEUED,          # hqw "1-5:2"
        ("60", 0): ENDED, ("60", 1): ENDED}                               # Eqw: never runs by itself
    assert report.states[("59", 2)] == "hqw"


def test_qacct_records_map_to_states():
    finals = sge_backend().parse_final((DATA / "sge-qacct.txt").read_text(), "61")
    assert {key: final.state for key, final in finals.items()} == {
        ("61", 0): "COMPLETED", ("61", 1): "FAILED", ("61", 2): "TIMEOUT", ("61", 3): "KILLED"}
    assert finals[("61", 1)].detail == "failed 0, exit status 3"
    assert "qmaster enforced h_rt" in finals[("61", 2)].detail


def test_cancel_deletes_runs_of_tasks_in_one_qdel():
    argv = sge_backend().cancel_argv([("7", 0), ("7", 1), ("7", 2), ("7", 5), ("9", 3)])
    assert argv == ["qdel", "7", "-t", "1-3", "7", "-t", "6-6", "9", "-t", "4-4"]


def test_job_id_and_array_limit():
    assert sge_backend().parse_job_id("4242.1-10:1\n", submission(10)) == "4242"
    with pytest.raises(ValueError):
        sge_backend().parse_job_id("Unable to run job\n", submission(10))
    assert sge_backend().parse_max_array_size("max_aj_instances 2000\nmax_aj_tasks 75000\n") == 75000
