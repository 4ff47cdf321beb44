"""The SLURM backend against the real SLURM brought up by tests/infra/slurm.sh.

Scheduler commands are counted with a PATH shim that logs each invocation, then runs the real command.
"""

from __future__ import annotations

import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from support import workloads

from clustrix_futures import JobFailedError
from clustrix_futures.engine.submission import plan_arrays
from clustrix_futures.schedulers.units import expand_ranges


def squeue_ids(job_name: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--array", f"--name={job_name}", "--format=%i"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def unique_name() -> str:
    return f"cf-{uuid.uuid4().hex[:8]}"


def test_thousand_submits_make_a_handful_of_sbatch_calls(slurm_executor, shim):
    ex = slurm_executor(tasks_per_element=25)
    futures = [ex.submit(workloads.square, i) for i in range(1000)]
    assert [f.result(300) for f in futures] == [i * i for i in range(1000)]
    assert 1 <= len(shim.calls("sbatch")) <= 5


def test_max_workers_is_the_array_throttle(slurm_executor, shim):
    ex = slurm_executor(3)
    assert [f.result(120) for f in [ex.submit(workloads.square, i) for i in range(8)]] == [i * i for i in range(8)]
    arrays = [arg for call in shim.calls("sbatch") for arg in call if arg.startswith("--array=")]
    assert arrays and all(arg.endswith("%3") for arg in arrays)


def _squeue_rate(slurm_executor, shim, tasks: int, per_element: int) -> float:
    """squeue calls per minute while ``tasks`` tasks, packed into 8 elements of ~4 s, run."""
    ex = slurm_executor(tasks_per_element=per_element)
    before = len(shim.times("squeue"))
    start = time.time()
    futures = [ex.submit(workloads.sleep_then, 4.0 / per_element, i) for i in range(tasks)]
    assert [f.result(300) for f in futures] == list(range(tasks))
    return (len(shim.times("squeue")) - before) / (time.time() - start) * 60


def test_squeue_calls_per_minute_do_not_grow_with_tasks(slurm_executor, shim):
    small = _squeue_rate(slurm_executor, shim, tasks=8, per_element=1)
    large = _squeue_rate(slurm_executor, shim, tasks=800, per_element=100)
    # one squeue per cycle, and a cycle at most every FASTEST_INTERVAL (0.2 s): 300 a minute at most
    assert small <= 300 and large <= 300
    assert large <= 1.5 * small + 30


def test_cancel_of_a_queued_task_removes_its_element(slurm_executor, signals):
    name = unique_name()
    ex = slurm_executor(1, job_name=name)
    started = signals / "started"
    futures = [ex.submit(workloads.touch_then_wait, str(started), str(signals / "release")),
               ex.submit(workloads.square, 5)]
    workloads.wait_for_file(str(started), 120)
    queued_ids = [i for i in squeue_ids(name) if not i.endswith("_0")]
    assert len(queued_ids) == 1, queued_ids
    assert futures[1].cancel()
    deadline = time.monotonic() + 30
    while queued_ids[0] in squeue_ids(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queued_ids[0] not in squeue_ids(name)
    (signals / "release").touch()
    assert futures[0].result(120)


def test_options_view_submits_with_other_resources(slurm_executor, shim):
    ex = slurm_executor(job_name=unique_name())
    big = ex.options(cpus=2, job_name="cf-big").submit(workloads.square, 6)
    small = ex.submit(workloads.square, 7)
    assert big.result(120) == 36 and small.result(120) == 49
    calls = shim.calls("sbatch")
    assert any("--cpus-per-task=2" in c and "--job-name=cf-big" in c for c in calls)
    assert any("--cpus-per-task=2" not in c for c in calls)


def test_elements_are_not_requeued_by_slurm_where_the_monitor_retries_preemption(slurm_executor, shim):
    """By default retry_states holds PREEMPTED and NODE_FAIL: the monitor runs those elements again (their
    unfinished tasks only), so SLURM must not requeue them as well (every task again)."""
    assert slurm_executor().submit(workloads.square, 2).result(120) == 4
    assert slurm_executor(retry_states=["BOOT_FAIL"]).submit(workloads.square, 3).result(120) == 9
    (retried, requeueable) = shim.calls("sbatch")
    assert "--no-requeue" in retried and "--no-requeue" not in requeueable


def test_run_directory_layout(slurm_executor, tmp_path):
    ex = slurm_executor(keep_files=True, tasks_per_element=2)
    assert [f.result(120) for f in [ex.submit(workloads.square, i) for i in range(4)]] == [0, 1, 4, 9]
    ex.shutdown()
    run = Path(ex.run_dir)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert sorted(p.name for p in (run / "batches").iterdir()) == ["0.json", "0.pkl", "0.sh"]
    results = sorted(p.name for p in (run / "results").iterdir())
    assert results == ["0-0.res", "0-1.res"]
    assert all(stat.S_IMODE((run / "results" / r).stat().st_mode) == 0o600 for r in results)
    assert {p.name for p in (run / "logs").iterdir()} == {"0-0.out", "0-0.err", "0-1.out", "0-1.err"}
    assert (run / "manifest.json").exists()


def test_run_directory_removed_after_success_and_kept_after_failure(slurm_executor, tmp_path):
    ok = slurm_executor()
    ok.submit(workloads.square, 2).result(120)
    ok.shutdown()
    assert not Path(ok.run_dir).exists()
    bad = slurm_executor()
    with pytest.raises(workloads.CustomError):
        bad.submit(workloads.raise_custom, "x").result(120)
    bad.shutdown()
    assert Path(bad.run_dir).exists()


@pytest.mark.parametrize("tasks,per_element,limit,expected", [
    (10, 4, None, [[[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]]),
    (5, 1, 2, [[[0], [1]], [[2], [3]], [[4]]]),
    (0, 1, None, []),
])
def test_plan_arrays_packs_evenly_and_respects_max_array_size(tasks, per_element, limit, expected):
    assert plan_arrays(list(range(tasks)), per_element, limit) == expected


def test_max_array_size_is_read_from_the_scheduler(slurm_executor):
    ex = slurm_executor()
    expected = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    size: dict[str, int] = {}
    for line in expected.splitlines():
        if line.startswith("MaxArraySize"):
            size["max"] = int(line.split("=")[1])
    assert ex._engine.monitor.env.max_array_size == size["max"]


def test_right_sizing_runs_only_unfinished_tasks_again_with_more_memory(slurm_executor, tmp_path):
    """Tasks over their element's memory are killed (the test SLURM enforces --mem: OUT_OF_MEMORY); with
    retry_policy their element runs again with twice the memory, its unfinished tasks only."""
    log_dir = tmp_path / "ran"
    log_dir.mkdir()
    ex = slurm_executor(mem="150M", tasks_per_element=4, retry_policy={"OUT_OF_MEMORY": {"mem": "x2"}}, retries=2)
    sizes = [1, 1, 200, 1, 1, 1, 1, 200]
    futures = [ex.submit(workloads.allocate_logged, size, str(log_dir), i) for i, size in enumerate(sizes)]
    assert [f.result(timeout=120) for f in futures] == sizes
    assert workloads.runs_recorded(log_dir) == {i: 2 if size == 200 else 1 for i, size in enumerate(sizes)}


def test_right_sizing_runs_a_map_chunk_again_from_the_items_it_had_not_reported(slurm_executor, tmp_path):
    """A map in two chunks of six whose fifth item holds 200 MB under mem=150M (each item waits 0.1 s first, so
    the items before it are reported in parts): its chunk's element ends OUT_OF_MEMORY; run again with twice the
    memory, the chunk goes on from the fifth item. Every result is right, and every item ran once but the
    fifth, twice."""
    log_dir = tmp_path / "ran"
    log_dir.mkdir()
    ex = slurm_executor(mem="150M", retry_policy={"OUT_OF_MEMORY": {"mem": "x2"}}, retries=2)
    sizes = [200 if i == 4 else 1 for i in range(12)]
    results = ex.map(workloads.allocate_logged, sizes, [str(log_dir)] * 12, range(12), [0.1] * 12, chunksize=6,
                     timeout=180)
    assert list(results) == sizes
    assert workloads.runs_recorded(log_dir) == {i: 2 if i == 4 else 1 for i in range(12)}


def test_elements_that_run_again_in_one_cycle_go_out_as_one_array(slurm_executor, tmp_path, shim):
    """Four elements of one array that run out of memory at once end in the same status report (or nearly:
    at least two together), and run again as one ``sbatch --array=I,J,...`` with twice the memory."""
    log_dir = tmp_path / "ran"
    log_dir.mkdir()
    ex = slurm_executor(mem="150M", tasks_per_element=1, retry_policy={"OUT_OF_MEMORY": {"mem": "x2"}})
    futures = [ex.submit(workloads.allocate_logged, 200, str(log_dir), i) for i in range(4)]
    assert [f.result(timeout=120) for f in futures] == [200] * 4
    first, *again = [next(w for w in call if w.startswith("--array=")) for call in shim.calls("sbatch")]
    assert first == "--array=0-3" and len(again) < 4 and any("," in flag for flag in again), again
    assert sorted(i for flag in again for i in expand_ranges(flag[len("--array="):])) == [0, 1, 2, 3]
    assert workloads.runs_recorded(log_dir) == {i: 2 for i in range(4)}


def test_right_sizing_stops_at_its_retries_with_the_original_error_and_the_runs(slurm_executor, tmp_path):
    log_dir = tmp_path / "ran"
    log_dir.mkdir()
    ex = slurm_executor(mem="100M", tasks_per_element=1, retry_policy={"OUT_OF_MEMORY": {"mem": "x2"}}, retries=2)
    future = ex.submit(workloads.allocate_logged, 1000, str(log_dir), 0)
    with pytest.raises(JobFailedError) as failed:
        future.result(timeout=120)
    assert failed.value.state == "OUT_OF_MEMORY"
    assert ("retry_policy stopped (it ran 3 times: retries=2); runs: mem=100M: OUT_OF_MEMORY; "
            "mem=200M: OUT_OF_MEMORY; mem=400M: OUT_OF_MEMORY" in str(failed.value)), str(failed.value)
    assert workloads.runs_recorded(log_dir) == {0: 3}


def test_right_sizing_stops_at_the_partition_s_memory_limit(slurm_executor, tmp_path):
    """The cap is read from ``scontrol show partition`` (here set on the gpu partition for the test)."""
    log_dir = tmp_path / "ran"
    log_dir.mkdir()
    subprocess.run(["scontrol", "update", "PartitionName=gpu", "MaxMemPerNode=300"], check=True)
    try:
        ex = slurm_executor(mem="150M", partition="gpu", tasks_per_element=1,
                            retry_policy={"OUT_OF_MEMORY": {"mem": 4}}, retries=5)
        with pytest.raises(JobFailedError) as failed:
            ex.submit(workloads.allocate_logged, 400, str(log_dir), 0).result(timeout=120)
    finally:
        subprocess.run(["scontrol", "update", "PartitionName=gpu", "MaxMemPerNode=0"], check=True)  # unlimited
    assert "300M is the partition's limit" in str(failed.value), str(failed.value)
    assert "runs: mem=150M: OUT_OF_MEMORY; mem=300M: OUT_OF_MEMORY" in str(failed.value)


def test_partition_limits_are_read_from_scontrol(slurm_executor):
    """The default partition of the test SLURM sets no MaxMemPerNode: the cap is its one node's memory."""
    from clustrix_futures.schedulers.slurm import SlurmBackend

    backend = SlurmBackend()
    out = subprocess.run(backend.limits_argv(None), capture_output=True, text=True, check=True).stdout
    limits = backend.parse_limits(out)
    assert (limits.mem_mb, limits.seconds, limits.default_seconds) == (16000, None, None)
    gpu = subprocess.run(backend.limits_argv("gpu"), capture_output=True, text=True, check=True).stdout
    assert backend.parse_limits(gpu).mem_mb == 16000
