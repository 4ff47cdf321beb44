"""The PBS backend: its commands and parsers for both flavours on qstat output of real PBS Pro and Torque
(tests/data/pbspro-*, torque-*, written from their documentation), and end to end through Debian's
Torque-style wrappers over SLURM (tests/infra/pbs.sh).

The wrappers are a PBS command interface, not a PBS server: their qsub takes ``-t`` arrays and prints a bare
id, their qstat shows Q/R/C per SLURM job without array indices or exit statuses, their qdel takes SLURM job
ids. What they cannot show is covered by the parser tests only.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from support import workloads

from clustrix_futures import JobFailedError
from clustrix_futures.schedulers.base import ENDED, QUEUED, RUNNING, ArraySubmission, BackendContext
from clustrix_futures.schedulers.pbs import PbsBackend

DATA = Path(__file__).parent / "data"


@pytest.fixture(params=["pbs"])
def backend(request: pytest.FixtureRequest) -> str:
    """The conftest's make_executor (and shim, requested after it) for this backend only."""
    return str(request.param)


def wrapper_job_ids(job_name: str) -> list[str]:
    """Ids of the jobs named ``job_name`` in the wrappers' brief qstat (``Job id  Name  Username ...``)."""
    out = subprocess.run(["qstat"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines()[2:] if line.split()[1:2] == [job_name]]


# ------------------------------------------------------------------------ through the wrappers over SLURM


def test_thousand_submits_make_a_handful_of_qsub_calls(make_executor, shim):
    ex = make_executor(tasks_per_element=250)
    futures = [ex.submit(workloads.square, i) for i in range(1000)]
    assert [f.result(300) for f in futures] == [i * i for i in range(1000)]
    calls = shim.calls("qsub")
    assert 1 <= len(calls) <= 5

    def elements(call: list[str]) -> int:  # a one-element submission is a plain job, without -t
        if "-t" not in call:
            return 1
        first, last = call[call.index("-t") + 1].split("%")[0].split("-")
        return int(last) - int(first) + 1

    # 250 tasks per element: 4 elements, or a few more if the batch window split the submissions
    assert 4 <= sum(elements(call) for call in calls) <= 4 + len(calls)


def test_array_elements_find_their_index_without_pbs_arrayid(make_executor):
    """The wrappers set SLURM_ARRAY_TASK_ID, not PBS_ARRAYID: the worker reads that one."""
    ex = make_executor(tasks_per_element=1)
    assert [f.result(120) for f in [ex.submit(workloads.echo, i) for i in range(6)]] == [
        ((i,), {}) for i in range(6)]


def test_external_qdel_fails_the_future(make_executor, signals):
    """The wrappers report a deleted job as C with no exit status: the future fails FAILED, saying so."""
    name = f"cf-{uuid.uuid4().hex[:8]}"
    ex = make_executor(job_name=name)
    started = signals / "started"
    future = ex.submit(workloads.touch_then_wait, str(started), str(signals / "never"))
    workloads.wait_for_file(str(started), 120)
    job_id, = wrapper_job_ids(name)
    subprocess.run(["qdel", job_id], check=True, capture_output=True)
    with pytest.raises(JobFailedError, match="no exit status") as caught:
        future.result(60)
    assert caught.value.state == "FAILED"
    assert caught.value.job_id == f"{job_id}_0"


def test_rejected_submission_fails_the_futures_with_the_scheduler_message(make_executor):
    ex = make_executor(partition="nosuchpartition")
    futures = [ex.submit(workloads.square, i) for i in range(3)]
    for future in futures:
        with pytest.raises(JobFailedError, match="invalid partition specified: nosuchpartition") as caught:
            future.result(60)
        assert caught.value.state == "SUBMIT_FAILED"
    assert ex.options(partition="debug").submit(workloads.square, 4).result(120) == 16


def test_walltime_memory_and_cpus_reach_the_wrappers(make_executor, shim):
    ex = make_executor(cpus=2, mem="512M", time="10")
    assert ex.submit(workloads.square, 3).result(120) == 9
    argv = shim.calls("qsub")[0]
    assert {"nodes=1:ppn=2", "mem=512mb", "walltime=00:10:00"} <= set(argv)


# ------------------------------------------------------------------------ commands, both flavours


def submission(size: int, start: int = 0, throttle=None, **resources) -> ArraySubmission:
    return ArraySubmission(3, size, "/runs/r1/batches/3.sh", "/runs/r1/logs/3-{index}.out",
                           "/runs/r1/logs/3-{index}.err", throttle, resources, start=start)


def pbs_backend(flavor: str = "pbspro") -> PbsBackend:
    return PbsBackend(BackendContext("python3", "/runs/r1", pbs_flavor=flavor))


def test_pbspro_submits_a_J_array_with_its_index_placeholder():
    argv = pbs_backend("pbspro").submit_argv(submission(8, throttle=3, cpus=4, mem="2G", gpus=1, nodes=2,
                                               time="1-00:30", partition="workq", account="proj"), "/s.sh")
    assert argv[:3] == ["qsub", "-N", "clustrix"]
    assert argv[argv.index("-J") + 1:argv.index("-J") + 3] == ["0-7", "-r"]
    assert argv[argv.index("-W") + 1] == "max_run_subjobs=3"
    assert argv[argv.index("-o") + 1] == "/runs/r1/logs/3-^array_index^.out"
    assert "select=2:ncpus=4:mem=2048mb:ngpus=1" in argv and "walltime=24:30:00" in argv
    assert argv[-5:] == ["-q", "workq", "-A", "proj", "/s.sh"]


def test_torque_submits_a_t_array_with_its_throttle():
    argv = pbs_backend("torque").submit_argv(submission(8, throttle=3, cpus=4, mem="2G", gpus=1), "/s.sh")
    assert argv[argv.index("-t") + 1] == "0-7%3"
    assert argv[argv.index("-e") + 1] == "/runs/r1/logs/3-$PBS_ARRAYID.err"
    assert {"nodes=1:ppn=4:gpus=1", "mem=2048mb"} <= set(argv)
    assert "-J" not in argv and "-r" not in argv


@pytest.mark.parametrize("flavor", ["pbspro", "torque"])
def test_one_element_is_a_plain_job_that_names_its_index(flavor):
    """PBS Pro refuses one-subjob arrays; a resubmitted element 5 runs as a plain job told its index."""
    backend = pbs_backend(flavor)
    job = submission(1, start=5)
    argv = backend.submit_argv(job, "/s.sh")
    assert argv[argv.index("-v") + 1] == "CLUSTRIX_ARRAY_INDEX=5"
    assert "-J" not in argv and "-t" not in argv
    assert argv[argv.index("-o") + 1] == "/runs/r1/logs/3-5.out"
    job_id = backend.parse_job_id("1240.pbsserver\n", job)
    assert job_id == "1240:5"  # qstat cannot show the element: the id keeps it
    assert backend.parse_status("1240.pbsserver alice workq clustrix 20230 1 1 -- 00:10 R 00:00\n",
                                [job_id]).phases == {(job_id, 5): RUNNING}
    assert backend.final_argv(job_id)[-1] == "1240"
    assert backend.cancel_argv([(job_id, 5), ("77[]", 2)]) == ["qdel", "1240", "77[2]"]


def test_job_names_keep_only_what_pbs_accepts():
    argv = pbs_backend("torque").submit_argv(submission(2, job_name="my job;$(x)'"), "/s.sh")
    assert argv[argv.index("-N") + 1] == "my_job___x__"


def test_status_lists_the_users_jobs_and_expands_arrays_only_when_there_are_some():
    backend = pbs_backend()
    assert backend.status_argv(["1240"]) == ["sh", "-c", 'exec qstat "$@" -u "$(id -un)"', "qstat"]
    assert backend.status_argv(["1240", "1234[]"])[-1] == "-t"


def test_job_ids_and_array_limit():
    backend = pbs_backend()
    assert backend.parse_job_id("1234[].pbsserver.example.org\n", submission(4)) == "1234[]"
    assert backend.parse_job_id("8159\n", submission(4)) == "8159~0-3"  # the wrappers print bare ids
    assert backend.parse_job_id("8160\n", submission(1)) == "8160"  # a plain job of element 0
    with pytest.raises(ValueError):
        backend.parse_job_id("There was an error running the Slurm sbatch command.\n", submission(4))
    assert backend.parse_max_array_size("set server max_array_size = 10000\n") == 10000  # PBS Pro
    assert backend.parse_max_array_size("set server max_job_array_size = 2048\n") == 2048  # Torque


# ------------------------------------------------------------------------ parsers on real formats


WRAPPER_QSTAT = """
vm:
                                                                               Req'd  Req'd   Elap
Job id               Username Queue    Name                 SessID NDS   TSK   Memory Time Use S Time
-------------------- -------- -------- -------------------- ------ ----- ----- ------ ----- - -----
33420                root     debug    other                --         1     1     -- 8760: R 00:00
33432                root     debug    t                    --         1     1     -- 71582 C 00:00
33438                root     debug    t                    --         1     1     -- 8760: {first} 00:00
33439                root     debug    t                    --         1     1     -- 8760: {second} 00:00
33437                root     debug    t                    --         1     1     -- 8760: C 00:00
"""  # `qstat -u root` of Debian's wrappers for `qsub -N t -t 0-2`: 33437 is the array, each subjob its own


@pytest.mark.parametrize("first, second, phase", [("R", "C", RUNNING), ("Q", "C", QUEUED), ("C", "C", ENDED)])
def test_an_array_whose_subjobs_qstat_does_not_name_is_in_one_phase(first, second, phase):
    """The wrappers list an array's subjobs under job numbers of their own, and the array's own number is
    SLURM's last-started subjob: reading that line as element 0 ended element 0 while it ran. Every element is
    running while a job of the array's name numbered from it runs (another name's job does not count)."""
    backend = pbs_backend("torque")
    job_id = backend.parse_job_id("33437\n", submission(3, job_name="t"))
    assert job_id == "33437~0-2" and backend.status_argv([job_id])[-1] == "qstat"  # no -t: the wrappers refuse it
    report = backend.parse_status(WRAPPER_QSTAT.format(first=first, second=second), [job_id])
    assert {key: value for key, value in report.phases.items() if key[0] == job_id} == {
        (job_id, 0): phase, (job_id, 1): phase, (job_id, 2): phase}
    assert backend.final_argv(job_id) == ["qstat", "-f", "33437"]
    assert backend.cancel_argv([(job_id, 1)]) == ["qdel", "33437"]
    finals = backend.parse_final("Job Id:\t33437\n\tjob_state = C\n", job_id)
    assert set(finals) == {(job_id, 0), (job_id, 1), (job_id, 2)}
    assert {final.state for final in finals.values()} == {"FAILED"}  # unless its result file says otherwise


def test_pbspro_qstat_t_u():
    report = pbs_backend().parse_status((DATA / "pbspro-qstat-t-u.txt").read_text(), ["1234[]", "1240", "1241"])
    assert report.phases == {
        ("1234[]", 0): RUNNING, ("1234[]", 1): RUNNING, ("1234[]", 2): QUEUED, ("1234[]", 3): ENDED,
        ("1234[]", 10): QUEUED, ("1240", 0): RUNNING, ("1241", 0): QUEUED}  # the array's own "B" line is not one


def test_torque_qstat_t_u():
    report = pbs_backend("torque").parse_status((DATA / "torque-qstat-t-u.txt").read_text(), ["5678[]", "5690"])
    assert report.phases == {("5678[]", 0): RUNNING, ("5678[]", 1): ENDED, ("5678[]", 2): QUEUED,
                             ("5678[]", 3): QUEUED, ("5690", 0): QUEUED}


def test_pbspro_history_gives_exit_status_walltime_and_kills():
    backend = pbs_backend()
    assert backend.final_argv("1234[]") == ["qstat", "-x", "-f", "-t", "1234[]"]
    finals = backend.parse_final((DATA / "pbspro-qstat-x-f-t.txt").read_text(), "1234[]")
    assert {key: final.state for key, final in finals.items()} == {
        ("1234[]", 0): "COMPLETED", ("1234[]", 1): "FAILED", ("1234[]", 2): "TIMEOUT", ("1234[]", 3): "KILLED"}
    assert "signal 15" in finals[("1234[]", 3)].detail


def test_torque_completed_jobs_give_exit_status():
    backend = pbs_backend("torque")
    assert backend.final_argv("5678[]") == ["qstat", "-f", "-t", "5678[]"]
    finals = backend.parse_final((DATA / "torque-qstat-f-t.txt").read_text(), "5678[]")
    assert {key: final.state for key, final in finals.items()} == {
        ("5678[]", 0): "COMPLETED", ("5678[]", 1): "FAILED", ("5678[]", 2): "TIMEOUT", ("5678[]", 3): "KILLED"}
    assert "could not run" in finals[("5678[]", 1)].detail
