"""``clustrix-futures report`` and ``ex.report()`` on the real SLURM, here and over SSH: the numbers agree with
what the tasks did, failures are counted by state, ``--json`` parses, and ``--plot`` writes a PNG."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from support import workloads
from support.executors import backend_options

from clustrix_futures import ClusterPoolExecutor
from clustrix_futures.errors import ConfigError, JobFailedError
from clustrix_futures.tools import cli

WAIT = 180  # seconds: a bound against hangs, never a performance assertion
SLEEP = 2.0


def cli_args(options: dict[str, Any]) -> list[str]:
    """The site flags naming the cluster of these executor options (every option but the backend)."""
    args = []
    for key, value in options.items():
        if key != "backend":
            args += ["--option", f"{key}={json.dumps(value) if isinstance(value, list) else value}"]
    return args


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


@pytest.mark.parametrize("backend", ["slurm", "slurm-ssh", "ssh", "ssh-local"])
def test_report_agrees_with_what_the_tasks_did(backend, request, tmp_path, capsys):
    options = backend_options(backend, request, tmp_path)
    began = time.time()
    with ClusterPoolExecutor(**options, tasks_per_element=1, mem="1G", time="10") as ex:
        sleeper = ex.submit(workloads.sleep_then, SLEEP, "slept")
        raiser = ex.submit(divmod, 1, 0)
        killer = ex.submit(workloads.die, 3)
        quick = [ex.submit(workloads.square, x) for x in range(3)]
        assert sleeper.result(WAIT) == "slept" and [f.result(WAIT) for f in quick] == [0, 1, 4]
        assert isinstance(raiser.exception(WAIT), ZeroDivisionError)
        assert isinstance(killer.exception(WAIT), JobFailedError)
        duration = time.time() - began
        text = ex.report().text()
        run_dir = ex.run_dir
    assert "asked 1G, used at most" in text and "slowest tasks:" in text, text

    capsys.readouterr()
    plot = tmp_path / "timeline.png"
    assert cli.main(["report", run_dir, "--json", "--plot", str(plot), *cli_args(options)]) == 0
    report = json.loads(capsys.readouterr().out)
    tasks = {t["task"]: t for t in report["tasks"]}
    assert SLEEP <= tasks[sleeper.task_id]["run_time"] <= SLEEP + 0.5, tasks[sleeper.task_id]
    waits = [e["queue_wait"] for e in report["elements"]]
    assert len(waits) == 6 and all(w is not None and 0 <= w < duration for w in waits), (waits, duration)
    latency = tasks[sleeper.task_id]["result_latency"]
    assert SLEEP <= latency < duration, (latency, duration)
    totals = report["totals"]
    assert totals["tasks"] == 6 and totals["states"] == {"succeeded": 4, "raised": 1, "failed": 1}, totals
    assert totals["failures"]["raised"] == 1 and sum(totals["failures"].values()) == 2, totals
    died = next(e for e in report["elements"] if killer.task_id in e["tasks"])
    assert died["node"] and died["wall"] is None  # its start frame says where it ran; it never ended
    assert report["distributions"]["run_time"]["max"] == tasks[sleeper.task_id]["run_time"]
    assert report["slowest"][0]["task"] == sleeper.task_id
    (efficiency,) = report["efficiency"]
    assert 0 < efficiency["mem_efficiency"] < 1 and efficiency["peak_rss"] > 1 << 20, efficiency
    width, height = png_size(plot)
    assert width >= 800 and 200 <= height <= 1500 and plot.stat().st_size > 10_000, (width, height)


def test_report_of_a_directory_that_is_not_a_run(slurm, tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    code = cli.main(["report", str(tmp_path / "nothing"), "--work-dir", str(tmp_path)])
    assert code == 2 and "not a clustrix-futures run directory" in capsys.readouterr().err


def test_report_of_local_processes_says_there_is_no_run_directory():
    with ClusterPoolExecutor(backend="local", max_workers=1) as ex, \
            pytest.raises(ConfigError, match="local processes keep none"):
        ex.report()


@pytest.mark.parametrize("backend", ["slurm-s3"])
def test_report_of_an_s3_run_times_tasks_and_says_queue_wait_is_not_measured(backend, request, tmp_path):
    options = backend_options(backend, request, tmp_path)
    with ClusterPoolExecutor(**options, tasks_per_element=1) as ex:
        sleeper = ex.submit(workloads.sleep_then, SLEEP, "slept")
        assert sleeper.result(WAIT) == "slept"
        report = ex.report()
    (task,) = report.tasks
    assert task.run_time is not None and SLEEP <= task.run_time <= SLEEP + 0.5
    assert task.element.node and task.element.cpu is not None and task.element.queue_wait is None
    assert report.distributions()["queue_wait"] is None and "not measured" in report.text()
    report.plot(str(tmp_path / "s3.png"))
    assert png_size(tmp_path / "s3.png")[0] >= 800
