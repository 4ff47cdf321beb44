"""A cheap cold start on the real SLURM: the site cache (no probe, no ``scontrol show config`` for a second
executor on a known site) and cold bursts of submits packed under the time budget, with give-back."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from support import workloads
from support.waiting import RESULT_WAIT

from clustrix_futures import ClusterPoolExecutor, JobFailedError
from clustrix_futures.engine.sitecache import EXPIRY_ENV, cache_dir


@pytest.fixture
def counted_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An interpreter named ``cfpython`` on PATH that logs each of its command lines, then runs this Python; a
    private cache directory for the site cache. The log is the returned path."""
    directory = tmp_path / "bin"
    directory.mkdir()
    log = tmp_path / "python-calls.log"
    log.touch()
    wrapper = directory / "cfpython"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return log


def probes(log: Path) -> int:
    """How often the start-up's interpreter probe ran (``cfpython -c ...``; jobs run ``cfpython -m ...``)."""
    return log.read_text().split().count("-c")


def config_queries(shim) -> int:
    return sum(1 for call in shim.calls("scontrol") if call[:2] == ["show", "config"])


def run_one(options: dict) -> None:
    with ClusterPoolExecutor(**options) as ex:
        assert ex.submit(workloads.add, 2, 3).result(RESULT_WAIT) == 5


def test_a_second_executor_on_a_known_site_runs_no_probe_command(slurm, counted_python, shim, tmp_path):
    options = {"backend": "slurm", "work_dir": str(tmp_path / "runs"), "python": "cfpython"}
    run_one(options)
    assert probes(counted_python) == 1 and config_queries(shim) == 1
    [entry] = cache_dir().iterdir()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600 and stat.S_IMODE(cache_dir().stat().st_mode) == 0o700
    assert json.loads(entry.read_text())["facts"]["max_array"] == 100001  # tests/infra/slurm.sh's MaxArraySize
    run_one(options)
    assert probes(counted_python) == 1 and config_queries(shim) == 1  # the second start-up asked nothing
    run_one({**options, "work_dir": str(tmp_path / "other-runs")})  # another site key: asked again
    assert probes(counted_python) == 2 and config_queries(shim) == 2


def test_an_entry_that_is_not_private_or_has_expired_is_not_trusted(slurm, counted_python, shim, tmp_path,
                                                                   monkeypatch):
    options = {"backend": "slurm", "work_dir": str(tmp_path / "runs"), "python": "cfpython"}
    run_one(options)
    [entry] = cache_dir().iterdir()
    entry.chmod(0o644)  # others could read it: not a private file of ours
    run_one(options)
    assert probes(counted_python) == 2
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600  # replaced by a private one
    monkeypatch.setenv(EXPIRY_ENV, "0")  # the cache is off
    run_one(options)
    assert probes(counted_python) == 3 and config_queries(shim) == 3


def test_a_failed_element_makes_the_next_executor_ask_the_site_again(slurm, counted_python, tmp_path):
    options = {"backend": "slurm", "work_dir": str(tmp_path / "runs"), "python": "cfpython", "retries": 0}
    run_one(options)
    assert len(list(cache_dir().iterdir())) == 1
    with ClusterPoolExecutor(**options) as ex, pytest.raises(JobFailedError):
        ex.submit(workloads.die, 3).result(RESULT_WAIT)
    assert list(cache_dir().iterdir()) == []  # forgotten: the interpreter may have changed
    run_one(options)
    assert probes(counted_python) == 2


def test_a_cold_burst_of_200_submits_goes_out_in_a_few_packed_elements(slurm_executor, shim):
    ex = slurm_executor()
    futures = [ex.submit(workloads.square, i) for i in range(200)]
    assert [f.result(RESULT_WAIT) for f in futures] == [i * i for i in range(200)]
    calls = shim.calls("sbatch")
    assert len(calls) <= 5
    elements = 0
    for call in calls:
        first, last = next(a for a in call if a.startswith("--array=")).split("=")[1].split("%")[0].split("-")
        elements += int(last) - int(first) + 1
    assert elements <= 16 * len(calls)  # packed: not one element per task
    assert len({f.job_id for f in futures}) == elements


def test_tasks_an_element_has_not_started_within_its_budget_go_out_again_and_run_once(slurm_executor, shim,
                                                                                     signals):
    ex = slurm_executor(2, element_seconds=1)
    gate = signals / "gate"
    # a cold burst of 7: task 0 alone, tasks 1-6 in one element, whose first task (1) waits for the gate
    futures = [ex.submit(workloads.gated_record, str(signals), str(gate) if i == 1 else "", i) for i in range(7)]
    assert [f.result(RESULT_WAIT) for f in futures[2:]] == [i * i for i in range(2, 7)]  # given back, ran
    assert not futures[1].done()  # still held by its element, behind the gate
    gate.touch()
    assert futures[1].result(RESULT_WAIT) == 1 and futures[0].result(RESULT_WAIT) == 0
    assert workloads.runs_recorded(signals) == {i: 1 for i in range(7)}  # each exactly once
    held = futures[1].job_id
    assert all(f.job_id.split("_")[0] != held.split("_")[0] for f in futures[2:])  # in another array
    assert len(shim.calls("sbatch")) >= 2
