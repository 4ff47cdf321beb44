"""The ``ssh`` backend: no scheduler, array elements run on the host under ``clustrix_futures.node.host_supervisor``.

Real processes only. The executor-level tests run on this machine (no ``host``: LocalTransport) and over the
real sshd (user cfuser, Debian's /usr/bin/python3); the supervisor tests run the backend's own commands here.
The whole conformance suite runs on this backend too, without a host (``ssh-local``) and over sshd (``ssh``):
see ``support.executors.BACKENDS``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import workloads
from support.executors import backend_options

from clustrix_futures import ClusterPoolExecutor, JobFailedError
from clustrix_futures.node import host_supervisor as hostrun
from clustrix_futures.schedulers.base import ENDED, QUEUED, RUNNING, ArraySubmission, BackendContext
from clustrix_futures.schedulers.host import HostBackend

WAIT = 60  # seconds: bound for anything we wait on (never asserted)

# ---------------------------------------------------------------- the executor, here and over sshd

@pytest.fixture(params=["ssh-local", "ssh"])
def host_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ssh backend on this machine (no host), and over the real sshd."""
    return backend_options(request.param, request, tmp_path)


def record_overlap(directory: str, index: int, together: int) -> int:
    """Record start and end times; hold the slot until ``together`` tasks have started."""
    Path(directory, f"start-{index}").write_text(repr(time.time()))
    deadline = time.monotonic() + WAIT
    while len([n for n in os.listdir(directory) if n.startswith("start-")]) < together:
        if time.monotonic() > deadline:
            raise TimeoutError("fewer tasks than expected ran at once")
        time.sleep(0.02)
    time.sleep(0.2)
    Path(directory, f"end-{index}").write_text(repr(time.time()))
    return index


def test_at_most_max_workers_elements_run_at_once(host_options, signals):
    with ClusterPoolExecutor(2, tasks_per_element=1, **host_options) as ex:
        futures = [ex.submit(record_overlap, str(signals), i, 2) for i in range(6)]
        assert [f.result(WAIT) for f in futures] == list(range(6))
    events = sorted((float((signals / f"{kind}-{i}").read_text()), kind == "start")
                    for i in range(6) for kind in ("start", "end"))
    running = most = 0
    for _, starts in events:
        running += 1 if starts else -1
        most = max(most, running)
    assert most == 2


def test_worker_exit_fails_its_future_with_the_exit_code(host_options):
    with ClusterPoolExecutor(**host_options) as ex:
        with pytest.raises(JobFailedError, match="FAILED.*exit code 3") as caught:
            ex.submit(workloads.die, 3).result(WAIT)
        assert caught.value.state == "FAILED"
        assert ex.submit(workloads.square, 4).result(WAIT) == 16


def test_killed_supervisor_fails_its_elements_instead_of_hanging(host_options, signals):
    """As after a reboot: supervisor and element killed; the future fails with LOST."""
    started = signals / "started"
    with ClusterPoolExecutor(1, **host_options) as ex:
        future = ex.submit(workloads.touch_then_wait, str(started), str(signals / "never"))
        workloads.wait_for_file(str(started), WAIT)
        kill_supervisor_and_element(ex.run_dir, "host-0")
        with pytest.raises(JobFailedError, match="supervisor") as caught:
            future.result(WAIT)
        assert caught.value.state == "LOST"


def test_lost_element_runs_again_when_retry_states_say_so(host_options, signals):
    started, release = signals / "started", signals / "release"
    with ClusterPoolExecutor(1, retry_states=["LOST"], **host_options) as ex:
        future = ex.submit(workloads.touch_then_wait, str(started), str(release))
        workloads.wait_for_file(str(started), WAIT)
        started.unlink()
        kill_supervisor_and_element(ex.run_dir, "host-0")
        workloads.wait_for_file(str(started), WAIT)  # the second launch of batch 0 runs it again
        release.touch()
        assert future.result(WAIT) == str(release)
        assert hostrun.read_job(hostrun.job_directory(ex.run_dir, "host-0.1") or "") is not None


def kill_supervisor_and_element(run: str, job_id: str) -> None:
    """What a reboot does to a job: its supervisor and its running element 0 die at once."""
    directory = hostrun.job_directory(run, job_id) or ""
    job = hostrun.read_job(directory)
    assert job is not None
    element = int(Path(directory, f"{job.first}.state").read_text().split()[1])
    os.kill(job.supervisor, signal.SIGKILL)
    os.killpg(element, signal.SIGKILL)


# ---------------------------------------------------------------- the supervisor, through the backend's commands

class Host:
    """The backend's commands on a run directory of this machine, run as real processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "logs").mkdir(parents=True)
        self.backend = HostBackend(BackendContext(sys.executable, str(root)))

    def run(self, argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def launch(self, batch: int, size: int, throttle: int, script: str, start: int = 0) -> str:
        path = self.root / f"{batch}.sh"
        path.write_text(script)
        pattern = str(self.root / "logs" / f"{batch}-{self.backend.index_placeholder}")
        submission = ArraySubmission(batch, size, str(path), pattern + ".out", pattern + ".err", throttle, {},
                                     start=start)
        return self.backend.parse_job_id(self.run(self.backend.submit_argv(submission, str(path))), submission)

    def phases(self, job: str) -> dict[int, str]:
        report = self.backend.parse_status(self.run(self.backend.status_argv([job])), [job])
        return {index: phase for (_, index), phase in report.phases.items()}

    def finals(self, job: str) -> dict[int, tuple[str, str]]:
        states = self.backend.parse_final(self.run(self.backend.final_argv(job)), job)
        return {index: (final.state, final.detail) for (_, index), final in states.items()}

    def supervisor(self, job_id: str) -> int:
        job = hostrun.read_job(hostrun.job_directory(str(self.root), job_id) or "")
        assert job is not None
        return job.supervisor

    def wait_for(self, condition: Any) -> Any:
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)
        return condition()


def gone(pid: int) -> bool:
    """No such process, or a zombie (its parent, maybe an init that reaps slowly, has not collected it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in "ZX"
    except FileNotFoundError:
        return True


# Each element records its index and pid, starts a background child in its process group, and waits for it.
BLOCKING = 'sleep 300 & echo "$$ $!" > "$(dirname "$0")/pids-$CLUSTRIX_ARRAY_INDEX"; wait\n'


def test_cancel_kills_a_running_elements_process_group_and_withdraws_queued_ones(tmp_path):
    host = Host(tmp_path / "run")
    job = host.launch(0, 3, 1, BLOCKING)
    assert job == "host-0"
    pids_file = tmp_path / "run" / "pids-0"
    host.wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2)
    assert host.wait_for(lambda: host.phases(job) == {0: RUNNING, 1: QUEUED, 2: QUEUED})
    pids = [int(p) for p in pids_file.read_text().split()]
    host.run(host.backend.cancel_argv([(job, 0), (job, 1), (job, 2)]))
    host.wait_for(lambda: all(gone(pid) for pid in pids))
    host.wait_for(lambda: gone(host.supervisor(job)))  # it ended: every element is accounted for
    assert host.phases(job) == {}
    finals = host.finals(job)
    assert {index: state for index, (state, _) in finals.items()} == {0: "CANCELLED", 1: "CANCELLED",
                                                                      2: "CANCELLED"}
    assert "running" in finals[0][1] and "queued" in finals[1][1]
    assert not (tmp_path / "run" / "pids-1").exists() and not (tmp_path / "run" / "logs" / "0-1.out").exists()


def test_elements_of_a_killed_supervisor_end_as_lost(tmp_path):
    host = Host(tmp_path / "run")
    release = tmp_path / "release"
    job = host.launch(0, 3, 1, f'touch "$(dirname "$0")/started"; while [ ! -e {release} ]; do sleep 0.05; done\n')
    host.wait_for(lambda: host.phases(job).get(0) == RUNNING)
    os.kill(host.supervisor(job), signal.SIGKILL)
    # the orphaned element still runs; the queued ones will never start
    assert host.wait_for(lambda: host.phases(job) == {0: RUNNING})
    assert {i: s for i, (s, _) in host.finals(job).items()} == {1: "LOST", 2: "LOST"}
    release.touch()
    assert host.wait_for(lambda: host.phases(job) == {})
    state, detail = host.finals(job)[0]
    assert state == "LOST" and "running" in detail


def test_exit_codes_and_signals_are_final_states(tmp_path):
    host = Host(tmp_path / "run")
    job = host.launch(0, 3, 0, 'case $CLUSTRIX_ARRAY_INDEX in 1) exit 7;; 2) kill -KILL $$;; esac\n')
    host.wait_for(lambda: gone(host.supervisor(job)))
    assert host.finals(job) == {0: ("COMPLETED", "exit code 0"), 1: ("FAILED", "exit code 7"),
                                2: ("KILLED", "signal 9 (SIGKILL)")}
    assert {p for p in host.phases(job).values()} <= {ENDED}


def test_status_of_one_command_covers_every_job_with_ranges(tmp_path):
    host = Host(tmp_path / "run")
    release = tmp_path / "release"
    wait = f"while [ ! -e {release} ]; do sleep 0.05; done\n"
    jobs = [host.launch(batch, 50, 2, wait) for batch in range(2)]
    host.wait_for(lambda: sum(p == RUNNING for p in host.phases(jobs[1]).values()) == 2)
    output = host.run(host.backend.status_argv(jobs))
    assert len(output.splitlines()) == 4  # per job: one line for the two running, one for the 48 queued
    report = host.backend.parse_status(output, jobs)
    assert len(report.phases) == 100 and report.states[("host-1", 49)] == "QUEUED"
    host.run(host.backend.cancel_argv([(job, i) for job in jobs for i in range(50)]))
    host.wait_for(lambda: host.phases(jobs[0]) == {} and host.phases(jobs[1]) == {})


def test_transient_errors_are_connection_failures():
    backend = HostBackend(BackendContext("python3", "/run"))
    assert backend.is_transient_error("ssh: connect to host h port 22: Connection refused")
    assert not backend.is_transient_error("ModuleNotFoundError: No module named 'clustrix_futures'")


def test_a_batch_launched_again_is_a_new_job_running_only_its_elements(tmp_path):
    host = Host(tmp_path / "run")
    record = 'echo "$CLUSTRIX_ARRAY_INDEX" >> "$(dirname "$0")/ran"\n'
    first = host.launch(0, 3, 0, record)
    host.wait_for(lambda: gone(host.supervisor(first)))
    again = host.launch(0, 1, 0, record, start=2)
    assert (first, again) == ("host-0", "host-0.1")
    host.wait_for(lambda: gone(host.supervisor(again)))
    assert host.finals(again) == {2: ("COMPLETED", "exit code 0")}
    assert sorted((tmp_path / "run" / "ran").read_text().split()) == ["0", "1", "2", "2"]
