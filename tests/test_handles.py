"""The handles on a future, on the real SLURM: ``job_id`` (the id squeue shows), ``job_state`` (queued ->
running -> done, from the monitor's cycles), ``stdout()``/``stderr()`` (the task's part of its element's log,
also when packed with other tasks); ``job_script()``; ``forward_output``; typed ``gpus``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import workloads
from support.waiting import wait_until

RESULT_WAIT = 120


def squeue_elements() -> dict[str, str]:
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i %T"], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def print_and_return(text: str, value: Any) -> Any:
    print(text, flush=True)
    print(f"err-{text}", file=sys.stderr, flush=True)
    return value


def wait_then_print(release: str, text: str) -> str:
    deadline = time.monotonic() + RESULT_WAIT
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print(text, flush=True)
    return text


def test_job_id_is_what_squeue_shows_and_state_goes_queued_running_done(slurm_executor, signals):
    ex = slurm_executor(tasks_per_element=1)
    release = signals / "release"
    future = ex.submit(workloads.wait_for_file, str(release), RESULT_WAIT)
    assert future.job_state == "queued"
    wait_until(lambda: future.job_id is not None, RESULT_WAIT, "the element was submitted")
    job_id = future.job_id
    assert job_id in squeue_elements()  # the element's id, as squeue shows it (JOB_INDEX)
    seen = {future.job_state}
    wait_until(lambda: seen.add(future.job_state) or future.job_state == "running", RESULT_WAIT,
               "the monitor saw the element running")
    assert squeue_elements().get(job_id) == "RUNNING"
    release.touch()
    future.result(RESULT_WAIT)
    assert future.job_state == "succeeded"
    assert seen <= {"queued", "running"} and "running" in seen


def test_failed_and_raised_states(slurm_executor):
    ex = slurm_executor(tasks_per_element=1)
    raised = ex.submit(workloads.raise_custom, "boom")
    died = ex.submit(workloads.die, 3)
    for future in (raised, died):
        future.exception(RESULT_WAIT)
    assert raised.job_state == "raised" and died.job_state == "failed"


def test_stdout_is_the_task_part_of_its_element_log_also_when_packed(slurm_executor):
    ex = slurm_executor(tasks_per_element=4)
    futures = [ex.submit(print_and_return, f"hello-{i}", i) for i in range(4)]
    assert [f.result(RESULT_WAIT) for f in futures] == [0, 1, 2, 3]
    assert len({f.job_id for f in futures}) == 1  # packed into one element
    for i, future in enumerate(futures):
        assert future.stdout() == f"hello-{i}\n"
        assert future.stderr() == f"err-hello-{i}\n"
    assert futures[0].stdout(max_bytes=3) == "-0\n"  # bounded: the end of the task's output


def test_stdout_of_a_running_task_and_of_one_not_started(slurm_executor, signals):
    ex = slurm_executor(tasks_per_element=2)
    release = signals / "release"
    first = ex.submit(print_and_return, "hello", 1)
    second = ex.submit(wait_then_print, str(release), "later")
    # the element still runs (its result file is not written): read from its partial journal
    wait_until(lambda: first.stdout() == "hello\n", RESULT_WAIT, "the first task's output is readable")
    assert not second.done() and second.stdout() == ""  # running, has printed nothing yet
    release.touch()
    assert second.result(RESULT_WAIT) == "later"
    assert second.stdout() == "later\n" and first.stdout() == "hello\n"


def test_local_futures_have_no_cluster_handles():
    from clustrix_futures import ClusterPoolExecutor

    with ClusterPoolExecutor(1) as ex:
        future = ex.submit(workloads.square, 3)
        assert future.result(RESULT_WAIT) == 9
    assert (future.job_id, future.job_state, future.stdout(), future.stderr()) == (None, None, None, None)


def test_job_script_runs_no_scheduler_command_and_runs_a_task_when_submitted_by_hand(slurm, shim, slurm_executor):
    from clustrix_futures.runfiles.batches import encode_batch
    from clustrix_futures.runfiles.journal import read_journal
    from clustrix_futures.runfiles.layout import RunDir
    from clustrix_futures.runfiles.outcomes import loads_outcome
    from clustrix_futures.serialization import dumps_task

    ex = slurm_executor(time="00:05:00")
    shown, big = ex.job_script(), ex.options(mem="64G").job_script()
    assert shim.calls("sbatch") == [] and shim.calls("squeue") == []
    assert shown.argv[0] == "sbatch" and "--time=00:05:00" in shown.argv and shown.argv[-1] == shown.path
    assert "--mem=64G" in big.argv and "--mem=64G" not in shown.argv and big.script == shown.script
    assert "clustrix_futures.node.worker element" in shown.script and shown.command in str(shown)
    assert not Path(shown.path).exists()  # nothing written
    # by hand: the batch file the script reads, the script where the command expects it, then sbatch
    run_dir = RunDir(str(ex.run_dir))
    batch = int(Path(shown.path).stem)
    Path(run_dir.batch_file(batch)).write_bytes(encode_batch([[(0, dumps_task(workloads.square, (7,), {}, True))]]))
    Path(shown.path).write_text(shown.script)
    Path(shown.path).chmod(0o700)
    subprocess.run(shown.argv, check=True, capture_output=True, timeout=60)
    result = Path(run_dir.result(batch, 0))
    wait_until(result.exists, RESULT_WAIT, "the hand-submitted job wrote its result")
    [(task_id, encoded)] = list(read_journal(result.read_bytes()))
    assert task_id == 0 and loads_outcome(encoded)[:2] == (True, 49)


def test_job_script_needs_a_scheduler():
    from clustrix_futures import ClusterPoolExecutor, ConfigError

    for backend in ("local", "debug"):
        with ClusterPoolExecutor(1, backend=backend) as ex, pytest.raises(ConfigError, match="submits no jobs"):
            ex.job_script()


def gpu_environment() -> str:
    import os

    return os.environ.get("SLURM_JOB_GPUS") or os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get(
        "SLURM_STEP_GPUS") or ""


def test_typed_gpus_reach_sbatch_as_gres_and_run(slurm, shim, slurm_executor):
    ex = slurm_executor(tasks_per_element=1)
    future = ex.options(gpus="tesla:1").submit(gpu_environment)
    assert future.result(RESULT_WAIT) != ""  # the job got a GPU (SLURM says which)
    [call] = shim.calls("sbatch")
    assert "--gres=gpu:tesla:1" in call and not any(arg.startswith("--gpus") for arg in call)
    plain = slurm_executor(gpus=1).submit(workloads.square, 3)
    assert plain.result(RESULT_WAIT) == 9 and "--gpus=1" in shim.calls("sbatch")[-1]


def test_a_gpu_type_the_cluster_lacks_fails_the_submission_naming_it(slurm_executor):
    from clustrix_futures import JobFailedError

    future = slurm_executor().options(gpus="h100:1").submit(workloads.square, 3)
    with pytest.raises(JobFailedError, match="rejected the submission") as caught:
        future.result(RESULT_WAIT)
    assert caught.value.state == "SUBMIT_FAILED"
    message = str(caught.value)  # quotes the command, so it names the GRES, and sbatch's refusal
    assert "--gres=gpu:h100:1" in message and "Requested node configuration is not available" in message, message


def test_a_gpu_type_is_a_config_error_where_the_scheduler_has_no_way_to_say_it():
    from clustrix_futures import ClusterPoolExecutor, ConfigError
    from clustrix_futures.config import validate_options
    from clustrix_futures.schedulers import check_resources

    assert validate_options({"gpus": "a100:2"}) == {"gpus": "a100:2"}
    for bad in ("a100", "a100:0", ":2", 0, "two"):
        with pytest.raises(ConfigError, match="'gpus' must be a positive integer or 'TYPE:COUNT'"):
            validate_options({"gpus": bad})
    for backend in ("sge", "pbs", "kubernetes", "ssh"):
        with pytest.raises(ConfigError, match=f"the {backend} backend takes a GPU count only.*slurm"):
            check_resources(backend, {"gpus": "a100:2"})
    check_resources("slurm", {"gpus": "a100:2"})
    with pytest.raises(ConfigError, match="the pbs backend takes a GPU count only"):
        ClusterPoolExecutor(backend="pbs", gpus="a100:1")  # before connecting to anything
    with ClusterPoolExecutor(1) as ex:
        ex.options(gpus="a100:2")  # local processes ignore resources


def _collect(capsys: Any, seen: list[str]) -> str:
    seen.append(capsys.readouterr().out)
    return "".join(seen)


def test_forward_output_writes_what_a_task_prints_to_the_client(slurm_executor, capsys):
    ex = slurm_executor(forward_output=True, tasks_per_element=1)
    assert ex.submit(print_and_return, "apple", 1).result(RESULT_WAIT) == 1
    seen: list[str] = []
    wait_until(lambda: "apple\n" in _collect(capsys, seen), 10, "apple on the client's stdout")
    assert "apple\n" in "".join(seen).splitlines(keepends=True)  # one task: no prefix


def test_forward_output_prefixes_each_line_with_its_task_when_several_run(slurm_executor, capsys):
    ex = slurm_executor(forward_output=True, tasks_per_element=4)
    futures = [ex.submit(print_and_return, f"apple-{i}", i) for i in range(4)]
    assert [f.result(RESULT_WAIT) for f in futures] == [0, 1, 2, 3]
    seen: list[str] = []
    expected = {f"[task {f.task_id}] apple-{i}\n" for i, f in enumerate(futures)}
    wait_until(lambda: expected <= set(_collect(capsys, seen).splitlines(keepends=True)), 10,
               "every task's line, prefixed")


def test_output_is_not_forwarded_from_a_cluster_by_default(slurm_executor, capsys):
    ex = slurm_executor(tasks_per_element=1)
    assert ex.submit(print_and_return, "pear", 1).result(RESULT_WAIT) == 1
    ex.shutdown()
    assert "pear" not in capsys.readouterr().out


def test_local_workers_print_here_unless_forward_output_is_off(capfd):
    from clustrix_futures import ClusterPoolExecutor

    for forward, shown in ((None, True), (False, False)):
        with ClusterPoolExecutor(1, forward_output=forward) as ex:
            assert ex.submit(print_and_return, f"plum-{forward}", 1).result(RESULT_WAIT) == 1
        assert (f"plum-{forward}" in capfd.readouterr().out) is shown


@pytest.mark.parametrize("backend", ["slurm", "slurm-ssh"])
def test_stdout_through_each_transport(backend, request, tmp_path, executors):
    from support.executors import backend_options

    from clustrix_futures import ClusterPoolExecutor

    ex = ClusterPoolExecutor(**backend_options(backend, request, tmp_path), tasks_per_element=2)
    executors.append(ex)
    futures = [ex.submit(print_and_return, f"hello-{i}", i) for i in range(2)]
    assert [f.result(RESULT_WAIT) for f in futures] == [0, 1]
    assert [f.stdout() for f in futures] == ["hello-0\n", "hello-1\n"]
    assert futures[1].stderr(max_bytes=2) == "1\n"
