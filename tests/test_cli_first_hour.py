"""The command-line fixes of the first hour (issue 15): ``--version``; ``bench --function`` importing from the
current directory; ``bench`` refusing to compare local with local; ``nodes`` following the selected backend.

Commands run in-process through ``cli.main`` where that shows the behaviour, and as a console script in a
subprocess where the difference is the interpreter's ``sys.path`` (a console script does not put the current
directory on it; ``python -m`` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import clustrix_futures
from clustrix_futures.tools import bench, cli

ROOT = Path(__file__).resolve().parent.parent
WAIT = 180  # seconds: a bound against hangs


@pytest.fixture
def no_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine with no clustrix-futures configuration: an empty HOME and working directory, no variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    for name in ("CLUSTRIX_FUTURES_PROFILE", "CLUSTRIX_FUTURES_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return home


def profile_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **profiles: dict[str, object]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"profiles": profiles}))
    monkeypatch.setenv("CLUSTRIX_FUTURES_CONFIG", str(path))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"clustrix-futures {clustrix_futures.__version__}"


def test_version_on_the_command_as_run_from_a_shell():
    done = subprocess.run([sys.executable, "-m", "clustrix_futures.tools.cli", "--version"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stdout.split() == ["clustrix-futures", clustrix_futures.__version__]


# ------------------------------------------------------------------ bench


def test_bench_refuses_to_compare_local_with_local(no_configuration, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(capsys, "bench", "--synthetic", "--backend", "local", "--tasks", "2")
    assert code == 2 and out == ""
    assert "compare local processes with themselves" in err and "--backend slurm" in err
    profile_file(tmp_path, monkeypatch, laptop={"backend": "local", "max_workers": 2})
    code, _, err = run_cli(capsys, "bench", "--synthetic", "--profile", "laptop", "--tasks", "2")
    assert code == 2 and "compare local processes with themselves" in err  # the profile's backend counts
    with pytest.raises(ValueError, match="with themselves"):
        bench.run_bench(bench.synthetic_workloads([0.001], tasks=2), {"backend": "local"})


@pytest.mark.slurm
def test_bench_function_is_imported_from_the_current_directory(slurm, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymod.py").write_text("def f(x):\n    return x + 1\n")
    console_script = tmp_path / "bin" / "clustrix-futures"  # what pip writes: its own directory is sys.path[0]
    console_script.parent.mkdir()
    console_script.write_text("import sys\nfrom clustrix_futures.tools.cli import main\nsys.exit(main())\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CLUSTRIX_FUTURES_PROFILE", None)
    done = subprocess.run([sys.executable, str(console_script), "bench", "--function", "mymod:f", "--range", "40",
                           "--backend", "slurm", "--work-dir", str(tmp_path / "runs"), "--quiet"],
                          cwd=project, capture_output=True, text=True, timeout=WAIT, env=env)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("mymod:f"))
    assert row.split()[2] == "40"
    missing = subprocess.run([sys.executable, str(console_script), "bench", "--function", "nomod:f", "--range",
                              "4", "--backend", "slurm"], cwd=project, capture_output=True, text=True,
                             timeout=WAIT, env=env)
    assert missing.returncode == 2 and "No module named 'nomod'" in missing.stderr


# ------------------------------------------------------------------ nodes


def test_nodes_without_a_profile_says_local_is_not_a_scheduler(no_configuration, capsys):
    code, out, err = run_cli(capsys, "nodes")
    assert code == 2 and out == ""
    assert "the backend is 'local', which is not a scheduler" in err and "--backend slurm" in err
    code, _, err = run_cli(capsys, "nodes", "--backend", "ssh", "--host", "example.invalid")
    assert code == 2 and "'ssh', which is not a scheduler" in err  # refused before any connection
    code, _, err = run_cli(capsys, "nodes", "--backend", "sge")
    assert code == 2 and "nodes reads SLURM's scontrol; the backend here is 'sge'" in err
    code, _, err = run_cli(capsys, "nodes", "--profile", "nope")
    assert code == 2 and "unknown profile 'nope'" in err


@pytest.mark.slurm
def test_nodes_uses_the_selected_profile(slurm, no_configuration, tmp_path, monkeypatch, capsys):
    profile_file(tmp_path, monkeypatch, cluster={"backend": "slurm", "work_dir": str(tmp_path / "runs")},
                 laptop={"backend": "local"})
    code, out, err = run_cli(capsys, "nodes", "--profile", "cluster", "--json")
    assert code == 0, err
    assert any(node["node"] == "localhost" for node in json.loads(out)["nodes"])
    monkeypatch.setenv("CLUSTRIX_FUTURES_PROFILE", "laptop")
    code, _, err = run_cli(capsys, "nodes")
    assert code == 2 and "not a scheduler" in err
    monkeypatch.setenv("CLUSTRIX_FUTURES_PROFILE", "cluster")
    code, out, _ = run_cli(capsys, "nodes")
    assert code == 0 and "GPUS FREE BY TYPE" in out


def test_help_names_every_command(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2
    for command in ("doctor", "status", "logs", "cancel", "clean", "nodes", "bench"):
        assert command in out
