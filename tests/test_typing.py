"""``submit`` and ``map`` are generic in the function's return type, as typeshed makes the stdlib's: mypy, run on
a small typed example against this package, infers ``ClusterFuture[int]`` (a ``Future[int]``) and ``Iterator[int]``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

EXAMPLE = '''
from concurrent.futures import Future
from clustrix_futures import ClusterPoolExecutor

def double(x: int) -> int:
    return 2 * x

ex = ClusterPoolExecutor()
future = ex.submit(double, 3)
reveal_type(future)
stdlib: Future[int] = future
reveal_type(ex.map(double, [1, 2]))
reveal_type(ex.options(mem="1G").submit(double, 3))
reveal_type(future.result())
wrong: Future[str] = ex.submit(double, 3)
'''


def test_mypy_infers_the_result_type(tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(textwrap.dedent(EXAMPLE))
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "MYPYPATH": package_parent}
    ran = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull,
                          "--follow-imports=silent", "--python-version", "3.10", str(example)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    lines = ran.stdout.splitlines()
    revealed = [line.split("Revealed type is ", 1)[1] for line in lines if "Revealed type is" in line]
    assert revealed == ['"clustrix_futures.future.ClusterFuture[int]"',
                        '"typing.Iterator[int]"',
                        '"clustrix_futures.future.ClusterFuture[int]"',
                        '"int"'], ran.stdout
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and "example.py:15" in errors[0], ran.stdout  # an int future is no str future
