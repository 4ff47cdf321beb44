"""The package builds, passes ``twine check --strict``, and works installed from its wheel in a fresh venv.

The build runs on a copy of the checkout (``python -m build`` makes the sdist, then the wheel from the sdist),
so nothing is written into the working tree. Installing the wheel downloads its few dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import clustrix_futures

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCES = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist", "site", ".*_cache")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel of this checkout."""
    tree = tmp_path_factory.mktemp("tree") / "clustrix-futures"
    shutil.copytree(ROOT, tree, ignore=NOT_SOURCES)
    out = tree / "dist"
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(tree)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_wheel_and_sdist_pass_twine_check_strict(dist):
    files = sorted(p.name for p in dist.iterdir())
    version = clustrix_futures.__version__
    assert files == [f"clustrix_futures-{version}-py3-none-any.whl", f"clustrix_futures-{version}.tar.gz"]
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_wheel_holds_py_typed_and_nothing_from_tests(dist):
    names = zipfile.ZipFile(next(dist.glob("*.whl"))).namelist()
    assert "clustrix_futures/py.typed" in names
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n or "conftest" in n]
    info = f"clustrix_futures-{clustrix_futures.__version__}.dist-info"
    assert {n.split("/")[0] for n in names} == {"clustrix_futures", info}
    metadata = zipfile.ZipFile(next(dist.glob("*.whl"))).read(f"{info}/METADATA").decode()
    assert "Requires-Python: >=3.10" in metadata  # the version and the floor come from one place each


def test_installed_wheel_runs_a_task_in_a_fresh_venv(dist, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # this checkout must not be seen
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              *map(str, dist.glob("*.whl"))], capture_output=True, text=True, timeout=300, env=env)
    assert install.returncode == 0, install.stdout + install.stderr
    check = ("from clustrix_futures import ClusterPoolExecutor\n"
             "import clustrix_futures\n"
             "assert clustrix_futures.__file__.startswith(sys.prefix), clustrix_futures.__file__\n"
             "print(ClusterPoolExecutor().submit(pow, 2, 5).result() == 32)\n")
    done = subprocess.run([str(python), "-c", "import sys\n" + check], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**env, "HOME": str(tmp_path)})
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stdout + done.stderr
    version = subprocess.run([str(venv / "bin" / "clustrix-futures"), "--version"], capture_output=True,
                             text=True, timeout=60, env=env)
    assert version.stdout.split() == ["clustrix-futures", clustrix_futures.__version__]
