"""Module state and tracebacks as ProcessPoolExecutor has them, on every backend (issue 17, points 2 and 5).

Each test runs a script whose functions live in its ``__main__`` (shipped by value), with the options of the
conformance backend, as a user's program would: the initializer's module state is seen by the tasks, it runs
once per worker process (local) or array element (schedulers), a raising initializer breaks the executor, and
a remote traceback names the script's file and line with the source line.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.executors import backend_options

SCRIPT_WAIT = 600  # seconds: a generous bound for a script of a few tasks on a busy 2-core machine

HEADER = """\
import os, sys
from clustrix_futures import ClusterPoolExecutor, ExecutorBrokenError
OPTIONS = eval(sys.argv[1])
"""


def run_script(tmp_path: Path, body: str, options: dict[str, Any]) -> list[str]:
    """Run ``body`` (after :data:`HEADER`) as ``tmp_path/prog.py``; its stdout's lines (it must succeed)."""
    script = tmp_path / "prog.py"
    script.write_text(HEADER + textwrap.dedent(body))
    out = subprocess.run([sys.executable, str(script), repr(options)], capture_output=True, text=True,
                         timeout=SCRIPT_WAIT, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


@pytest.fixture
def options(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The backend's options. The jobs of PBS, Grid Engine and the Kubernetes stand-in do not inherit the test's
    environment: a ``PYTHONPATH`` that puts a work tree's code first is passed on with ``setup`` (on this machine;
    over SSH the code under test is staged), so their elements run the code under test."""
    found = backend_options(backend, request, tmp_path)
    if "host" not in found and os.environ.get("PYTHONPATH"):
        found["setup"] = [f"export PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}"]
    return found


STATE_SCRIPT = """
    TABLE = None
    STATE = {}

    def init(a, b):
        global TABLE
        TABLE = [a, b]
        STATE["scale"] = a * b

    def read_global(x):
        return TABLE[1] * x

    def read_state(x):
        return STATE["scale"] + x

    with ClusterPoolExecutor(2, initializer=init, initargs=(3, 7), **OPTIONS) as ex:
        print(ex.submit(read_global, 2).result(), ex.submit(read_state, 1).result())
        print(list(ex.map(read_global, range(4))), list(ex.map(read_state, range(3), chunksize=1)))
"""
STATE_SEEN = ["14 22", "[0, 7, 14, 21] [21, 22, 23]"]


def test_initializer_state_in_main_is_seen_by_main_tasks(options, tmp_path):
    """A global set with ``global`` and a dict filled in place, both by the initializer, both read by tasks."""
    assert run_script(tmp_path, STATE_SCRIPT, options) == STATE_SEEN


def test_initializer_state_in_main_on_the_debug_backend(tmp_path):
    assert run_script(tmp_path, STATE_SCRIPT, {"backend": "debug"}) == STATE_SEEN


def test_initializer_runs_once_per_worker_and_tasks_see_its_state(options, backend, tmp_path, signals):
    """Each initializer run appends its token to a file; every task returns the token (and run count) its
    worker's module state holds: each run is seen by tasks, none ran twice in one worker, and on a scheduler
    tasks packed into one element share one run."""
    runs = signals / "runs"
    lines = run_script(tmp_path, f"""
        TOKEN = None
        CALLS = 0

        def init(path):
            global TOKEN, CALLS
            TOKEN, CALLS = os.urandom(8).hex(), CALLS + 1
            with open(path, "a") as log:
                log.write(TOKEN + "\\n")

        def seen(i):
            return TOKEN, CALLS

        extra = {{}} if OPTIONS["backend"] == "local" else {{"tasks_per_element": 5}}
        with ClusterPoolExecutor(2, initializer=init, initargs=({str(runs)!r},), **OPTIONS, **extra) as ex:
            for token, calls in [f.result() for f in [ex.submit(seen, i) for i in range(10)]]:
                print(token, calls)
    """, options)
    seen = [line.split() for line in lines]
    logged = runs.read_text().split()
    assert len(seen) == 10 and all(calls == "1" for _, calls in seen), seen
    assert len(logged) == len(set(logged)), logged
    assert {token for token, _ in seen} <= set(logged)
    if backend == "local":
        assert len(logged) <= 2
    else:
        assert len(set(logged)) < 10, "tasks packed into an element should share its initializer's run"


def test_a_raising_initializer_breaks_the_executor(options, tmp_path):
    lines = run_script(tmp_path, """
        import time

        def init():
            raise RuntimeError("no licence server")

        def task():
            return "ran"

        with ClusterPoolExecutor(1, initializer=init, **OPTIONS) as ex:
            try:
                print("result", ex.submit(task).result())
            except ExecutorBrokenError as exc:
                print("broken", "no licence server" in str(exc), 'raise RuntimeError("no licence server")' in str(exc))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the done-callback that marks it broken may run just after result()
                try:
                    ex.submit(task).cancel()
                except ExecutorBrokenError:
                    print("later submit refused")
                    break
                time.sleep(0.05)
    """, options)
    assert lines == ["broken True True", "later submit refused"]


def test_a_main_function_traceback_names_the_script_line_and_source(options, tmp_path):
    """The remote traceback (``__cause__``) of a ``__main__`` function, by submit and in a map chunk."""
    lines = run_script(tmp_path, """
        def helper(x):
            return {"a": 1}[x]  # the failing line

        def work(x):
            return helper(x) + 1

        with ClusterPoolExecutor(2, **OPTIONS) as ex:
            for run in (lambda: ex.submit(work, "b").result(), lambda: list(ex.map(work, ["a", "b"], chunksize=2))):
                try:
                    run()
                except KeyError as exc:
                    print(repr(str(exc.__cause__)))
    """, options)
    script = str(tmp_path / "prog.py")
    line = 1 + (tmp_path / "prog.py").read_text().splitlines().index('    return {"a": 1}[x]  # the failing line')
    assert len(lines) == 2, lines
    for text in (eval(found) for found in lines):
        assert f'File "{script}", line {line}, in helper' in text, text
        assert 'return {"a": 1}[x]  # the failing line' in text, text
        assert f'File "{script}", line {line + 3}, in work' in text, text
        assert "<dynamic-code>" not in text
