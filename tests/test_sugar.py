"""Progress bars, the seed decorator and the cluster filesystem helpers, on real backends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import workloads
from support.infra import ssh_options

from clustrix_futures import ClusterPoolExecutor, cluster, progress
from clustrix_futures.progressbar import counts


def test_progress_yields_every_future_and_counts_states(capsys):
    with ClusterPoolExecutor(2) as ex:
        futures = [ex.submit(workloads.square, i) for i in range(20)] + [ex.submit(workloads.raise_custom, "x")]
        finished = list(progress(futures, desc="squares"))
        assert set(finished) == set(futures)
        assert counts(futures) == {"done": 20, "running": 0, "queued": 0, "failed": 1}
    err = capsys.readouterr().err
    assert "squares" in err and "21/21" in err and "failed=1" in err


def test_map_with_progress_shows_items(capsys):
    with ClusterPoolExecutor(2) as ex:
        assert list(ex.map(workloads.square, range(50), progress=True)) == [i * i for i in range(50)]
    assert "50/50" in capsys.readouterr().err


def test_every_export_is_what_it_names_whatever_was_imported_before():
    import importlib
    import pkgutil
    import subprocess
    import sys

    import clustrix_futures

    for module in pkgutil.walk_packages(clustrix_futures.__path__, "clustrix_futures."):  # submodules set
        if module.name != "clustrix_futures.schedulers.kubernetes":                      # package attributes
            importlib.import_module(module.name)
    for name in clustrix_futures.__all__:
        assert not isinstance(getattr(clustrix_futures, name), type(clustrix_futures)), name  # no module
    code = "import clustrix_futures.tools.cli; from clustrix_futures import cluster; print(callable(cluster))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


def test_decorator_blocks_and_offers_futures(slurm, tmp_path):
    @cluster(backend="slurm", work_dir=str(tmp_path / "runs"))
    def cube(x: int) -> int:
        return x ** 3

    assert cube(3) == 27  # a call blocks and returns the result
    assert cube.submit(4).result(120) == 64
    assert list(cube.map(range(4))) == [0, 1, 8, 27]
    assert cube.__name__ == "cube" and cube.executor.backend == "slurm"
    cube.executor.shutdown()


def test_files_helpers_locally(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "data.csv").write_text("1,2\n")
    (tmp_path / "b.txt").write_text("x")
    with ClusterPoolExecutor(1) as ex:
        files = ex.files
        assert files.ls(str(tmp_path)) == ["a", "b.txt"]
        assert files.exists(str(tmp_path / "b.txt")) and not files.exists(str(tmp_path / "nope"))
        assert files.stat(str(tmp_path / "a" / "data.csv"))["size"] == 4
        assert files.glob("**/*.csv", str(tmp_path)) == [str(tmp_path / "a" / "data.csv")]
        assert files.find(str(tmp_path), "*.txt") == [str(tmp_path / "b.txt")]
        with pytest.raises(OSError, match="FileNotFoundError"):
            files.ls(str(tmp_path / "missing"))


def test_files_helpers_over_ssh_use_the_remote_filesystem(sshd, slurm):
    with ClusterPoolExecutor(backend="slurm", **ssh_options(sshd)) as ex:
        files = ex.files
        home = files.ls("~")
        assert "cf-test-runs" in home  # cfuser's home, not ours
        assert files.stat("~")["is_dir"]
        assert any(p.endswith("manifest.json") for p in files.find(ex.run_dir, "manifest.json"))
        assert files.exists("/home/cfuser") and not files.exists("/root/.nothing-" + str(os.getpid()))
        assert ex.scheduler_commands.get("python3", 0) == 0  # helpers are not scheduler commands
    assert Path("/home/cfuser").exists()


def test_progress_without_tqdm_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with pytest.raises(ImportError, match=r"clustrix-futures\[progress\]"):
        next(progress([]), None)
