"""``clustrix-futures bench`` and the API behind it: real runs on local processes and on the real SLURM.

Wall times are measured, never asserted: only their sanity (positive, consistent with the task counts). On SLURM
the CLI also prints the slurmctld RPCs of its cluster runs (``sdiag`` before and after each, through the
cluster's transport): checked for plausible counts here, and parsed in tests/unit/test_sdiag.py.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clustrix_futures.tools import bench
from clustrix_futures.tools.bench import Row

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cli(*args: str, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if k != "CLUSTRIX_FUTURES_PROFILE"}, **extra_env}
    return subprocess.run([sys.executable, "-m", "clustrix_futures.tools.cli", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_sane(result: bench.BenchResult, durations: list[float]) -> None:
    assert [r.task_seconds for r in result.rows] == sorted(durations)
    for row in result.rows:
        assert row.tasks > 0 and row.local_seconds > 0 and row.cluster_seconds > 0
        assert row.local_rate > 0 and row.cluster_rate > 0
        # no run can beat perfectly parallel work
        assert row.overhead(row.local_seconds, row.local_slots) > 0
        assert row.overhead(row.cluster_seconds, row.cluster_slots) > 0
    if result.crossover is None:
        assert "never" in result.crossover_note or "always" in result.crossover_note
    else:
        assert min(durations) <= result.crossover <= max(durations)


def test_api_on_local_and_slurm_returns_sane_rows(slurm, tmp_path):
    durations = [0.001, 0.05]
    workloads = bench.synthetic_workloads(durations, tasks=24, local_workers=2)
    result = bench.run_bench(workloads, {"backend": "slurm", "work_dir": str(tmp_path / "runs")}, local_workers=2)
    assert result.cluster_label == "slurm"
    assert [r.tasks for r in result.rows] == [24, 24]
    assert {(r.local_slots, r.cluster_slots) for r in result.rows} == {(2, 16)}
    assert_sane(result, durations)
    table = bench.format_table(result)
    assert "sleep 0.001 s" in table and "crossover:" in table and "overhead/task =" in table


def test_cli_on_slurm_prints_the_table_and_writes_a_readable_png(slurm, tmp_path):
    out = tmp_path / "plot.png"
    done = cli("--synthetic", "--task-seconds", "0.001,0.02", "--tasks", "16", "--backend", "slurm",
               "--work-dir", str(tmp_path / "runs"), "--option", "element_seconds=1", "--plot", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["workload", "task", "s", "tasks"]
    assert "local tasks/s" in lines[0] and "cluster tasks/s" in lines[0]
    assert sum(line.startswith("sleep ") for line in lines) == 2
    assert any(line.startswith("crossover: ") for line in lines)
    assert "16 tasks on cluster" in done.stderr  # progress lines
    width, height = png_size(out)
    assert width >= 600 and height >= 400 and out.stat().st_size > 10_000
    image = pytest.importorskip("matplotlib.image").imread(out)
    assert image.shape[:2] == (height, width)


def rpc_table(stdout: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The RPC table under bench's table: its title, and per row name (message type, or the "all message
    types..." totals) the RPCs counted and the RPCs per 1000 tasks."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("slurmctld RPCs of the cluster runs"))
    assert lines[start + 1].split() == ["message", "type", "RPCs", "per", "1000", "tasks"]
    rows = {}
    for line in lines[start + 2:]:
        if line.startswith("("):
            break
        *name, count, per_1000 = line.split()
        rows[" ".join(name)] = (int(count.replace(",", "")), int(per_1000.replace(",", "")))
    return lines[start], rows


def test_cli_on_a_slurm_profile_prints_the_rpcs_of_its_cluster_runs(slurm, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"profiles": {"here": {"backend": "slurm", "work_dir": str(tmp_path / "runs"),
                                                            "element_seconds": 1}}}))
    done = cli("--synthetic", "--task-seconds", "0.001", "--tasks", "20", "--profile", "here", "--local-workers",
               "2", "--repeat", "2", "--quiet", CLUSTRIX_FUTURES_CONFIG=str(config))
    assert done.returncode == 0, done.stderr
    assert "cluster: profile here (slurm)" in done.stdout
    title, rows = rpc_table(done.stdout)
    assert "; 2 runs, 40 tasks in all" in title  # both cluster runs of --repeat 2, not the local ones
    submits, per_1000 = rows["REQUEST_SUBMIT_BATCH_JOB"]
    assert submits >= 2  # at least one sbatch a run
    assert per_1000 == round(submits * 1000 / 40)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    mine, _ = rows[f"all message types, user {user}"]
    assert mine >= 2 and rows["all message types (all users)"][0] >= submits
    assert "REQUEST_STATS_INFO" not in rows  # sdiag's own calls left out
    assert len([name for name in rows if not name.startswith("all ")]) <= 9  # the top 8 types, and the submits


def test_cli_goes_on_without_rpcs_when_sdiag_is_not_permitted(slurm, tmp_path):
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sdiag").write_text("#!/bin/sh\necho 'sdiag: error: Access/permission denied' >&2\nexit 1\n")
    (shim / "sdiag").chmod(0o755)
    done = cli("--synthetic", "--task-seconds", "0.001", "--tasks", "4", "--backend", "slurm", "--work-dir",
               str(tmp_path / "runs"), "--local-workers", "1", "--quiet", PATH=f"{shim}:{os.environ['PATH']}")
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("sleep 0.001 s") for line in done.stdout.splitlines())
    failed = [line for line in done.stdout.splitlines() if "RPCs" in line]
    assert failed == ["slurmctld RPCs: not counted: sdiag failed: on this machine: `sdiag` exited with 1: "
                      "sdiag: error: Access/permission denied"]


def test_cli_over_ssh_compares_with_slurm_on_the_remote_side(slurm, sshd, tmp_path):
    from support.infra import ssh_options

    options = ssh_options(sshd)
    flags = [arg for name, value in options.items() if name not in ("host", "work_dir")
             for arg in ("--option", f"{name}={value if not isinstance(value, list) else value[0]}")]
    done = cli("--synthetic", "--task-seconds", "0.001,0.02", "--tasks", "8", "--backend", "slurm",
               "--host", options["host"], "--work-dir", options["work_dir"], *flags, "--local-workers", "2",
               "--quiet")
    assert done.returncode == 0, done.stderr
    assert sum(line.startswith("sleep ") for line in done.stdout.splitlines()) == 2
    assert "crossover:" in done.stdout
    title, rows = rpc_table(done.stdout)  # sdiag ran over SSH, as the user who submitted there
    assert "; 2 runs, 16 tasks in all" in title
    assert rows["REQUEST_SUBMIT_BATCH_JOB"][0] >= 2
    assert rows[f"all message types, user {options['username']}"][0] >= 2


@pytest.mark.slurm
def test_cli_with_a_function_and_a_range_against_slurm(slurm, tmp_path):
    done = cli("--function", "operator:neg", "--range", "10:5010", "--backend", "slurm",
               "--work-dir", str(tmp_path / "runs"), "--quiet")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("operator:neg"))
    assert row.split()[2] == "5,000"
    assert "needs at least two task durations" in done.stdout
    assert done.stderr == ""


@pytest.mark.slurm
def test_cli_plot_writes_a_png_for_a_sweep(slurm, tmp_path):
    out = tmp_path / "sweep.png"
    done = cli("--synthetic", "--task-seconds", "0.002,0.001", "--tasks", "8", "--backend", "slurm",
               "--work-dir", str(tmp_path / "runs"), "--local-workers", "1", "--quiet", "--plot", str(out))
    assert done.returncode == 0, done.stderr
    assert png_size(out) >= (600, 400)


def test_cli_errors_are_clear():
    no_cluster = cli("--synthetic")
    assert no_cluster.returncode == 2 and "--profile P, or --backend B" in no_cluster.stderr
    no_range = cli("--function", "operator:neg", "--backend", "local")
    assert no_range.returncode == 2 and "--range" in no_range.stderr
    bad_function = cli("--function", "operator:no_such", "--range", "3", "--backend", "local")
    assert bad_function.returncode == 2 and "no attribute 'no_such'" in bad_function.stderr
    bad_option = cli("--synthetic", "--backend", "slurm", "--option", "colour=blue")
    assert bad_option.returncode == 2 and "unknown option 'colour'" in bad_option.stderr
    bad_durations = cli("--synthetic", "--backend", "local", "--task-seconds", "0.1,-1")
    assert bad_durations.returncode == 2 and "positive seconds" in bad_durations.stderr


def test_plot_without_matplotlib_names_the_extra(tmp_path):
    script = ("import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
              "from clustrix_futures.tools.cli import main\n"
              f"sys.exit(main(['bench', '--synthetic', '--backend', 'local', '--plot', {str(tmp_path / 'x.png')!r}]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "pip install 'clustrix-futures[plot]'" in done.stderr
    assert not (tmp_path / "x.png").exists()


def rows(*points: tuple[float, float, float]) -> list[Row]:
    """Rows of 100 tasks from (task seconds, local seconds, cluster seconds)."""
    return [Row("w", d, 100, local, cluster, 2, 16) for d, local, cluster in points]


def test_crossover_is_interpolated_on_log_axes_or_explained():
    # cluster/local throughput ratio: 0.5 at 0.01 s, 2 at 0.1 s -> log-midpoint, 10**-1.5
    crossover, note = bench.find_crossover(rows((0.001, 1, 10), (0.01, 1, 2), (0.1, 2, 1)))
    assert crossover is not None and math.isclose(crossover, 10**-1.5)
    assert "between 0.01 s and 0.1 s" in note
    assert bench.find_crossover(rows((0.01, 1, 2), (0.1, 1, 3))) == (
        None, "the cluster never wins in the measured range (0.01 to 0.1 s per task)")
    assert bench.find_crossover(rows((0.01, 2, 1), (0.1, 3, 1)))[1].startswith("the cluster always wins")
    # a win at a short duration that does not last: the crossover is above the last loss
    crossover, note = bench.find_crossover(rows((0.001, 2, 1), (0.01, 1, 2), (0.1, 2, 1)))
    assert crossover is not None and 0.01 < crossover < 0.1 and "non-monotonic" in note
    assert bench.find_crossover(rows((0.01, 1, 2)))[0] is None


def test_ranges_and_synthetic_task_counts():
    assert bench.parse_range("5") == range(5)
    assert bench.parse_range("2:10:4") == range(2, 10, 4)
    with pytest.raises(ValueError):
        bench.parse_range("3:1")
    counts = [len(w.items) for w in bench.synthetic_workloads([1.0, 0.001, 10**-7], run_seconds=1,
                                                              local_workers=2)]
    assert counts == [bench.MAX_TASKS, 2000, bench.MIN_TASKS]  # sorted by duration, clamped
    assert {len(w.items) for w in bench.synthetic_workloads([0.1, 0.2])} == {bench.DEFAULT_TASKS}
    start = time.perf_counter()
    assert bench.synthetic_task(7, 0.01) == 7
    assert time.perf_counter() - start >= 0.01
