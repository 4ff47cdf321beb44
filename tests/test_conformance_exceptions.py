"""Failures as ProcessPoolExecutor gives them, on every backend in ``support.executors.BACKENDS`` (issue 17):
exceptions come back as their own class even when their ``__init__`` takes other arguments than ``args``
(point 4), a result whose unpickling raises ``SystemExit`` fails only its future (12c), a broken executor is a
``concurrent.futures.BrokenExecutor`` (12d), and a run that succeeded writes nothing on stderr (point 6).
"""

from __future__ import annotations

import concurrent.futures as cf
import textwrap
from concurrent.futures.process import BrokenProcessPool

import pytest
from support import raising, workloads
from support.clients import run_client, run_clients
from support.executors import backend_options

from clustrix_futures import ClusterFuturesError, ConfigError, RemoteError
from clustrix_futures.runfiles.outcomes import RemoteTraceback

RESULT_WAIT = 120  # seconds: a generous bound for one result on a busy 2-core CI machine


def remote_traceback_of(exc: BaseException) -> RemoteTraceback:
    """The RemoteTraceback at the end of an exception's cause chain."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    assert isinstance(exc, RemoteTraceback)
    return exc


def test_an_exception_whose_init_takes_other_arguments_comes_back_as_itself(make_executor):
    ex = make_executor()
    with pytest.raises(raising.TwoArgs) as caught:
        ex.submit(raising.raise_two_args, 1, 2).result(RESULT_WAIT)
    error = caught.value
    assert type(error) is raising.TwoArgs and error.args == ("1-2",) and error.a == 1
    assert error.__notes__ == ["note 1"]
    assert type(error.__cause__) is KeyError and error.__cause__.args == (1,)
    assert "raise_two_args" in remote_traceback_of(error).text


@pytest.mark.parametrize("chunksize", [1, 4])
def test_a_map_item_whose_exception_has_its_own_init_raises_it(make_executor, chunksize):
    ex = make_executor()
    seen = []
    with pytest.raises(raising.TwoArgs) as caught:
        for value in ex.map(raising.two_args_at_3, range(8), chunksize=chunksize, timeout=RESULT_WAIT):
            seen.append(value)
    assert seen == [0, 1, 2] and caught.value.args == ("3-three",) and caught.value.a == 3


def test_an_exception_that_truly_cannot_travel_is_a_remote_error_that_says_why(make_executor):
    ex = make_executor()
    with pytest.raises(RemoteError) as caught:
        ex.submit(workloads.raise_unreturnable).result(RESULT_WAIT)
    assert caught.value.type_name == f"{workloads.__name__}.Unreturnable" and caught.value.message == "1/2"
    assert "lock" in caught.value.reason and "lock" in str(caught.value)


def test_a_main_module_exception_class_with_its_own_init_is_caught_by_its_class(backend, request, tmp_path):
    """Run as a user's script: the class lives in ``__main__`` and travels by value."""
    out = run_client(tmp_path, backend_options(backend, request, tmp_path), """
        class E(ValueError):
            def __init__(self, a, b):
                super().__init__(f"{a}-{b}")
                self.a = a

        def fails(a, b):
            raise E(a, b)

        with ClusterPoolExecutor(**OPTIONS) as ex:
            try:
                ex.submit(fails, 1, 2).result(120)
            except E as e:
                print("caught", e.args, e.a, type(e.__cause__).__name__)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "caught ('1-2',) 1 RemoteTraceback", out.stderr


def test_a_result_whose_unpickling_raises_system_exit_fails_only_its_future(make_executor):
    ex = make_executor()
    exits, interrupts = ex.submit(raising.exit_on_load, 1), ex.submit(raising.interrupt_on_load)
    for future, raised, said in ((exits, "SystemExit", "ExitOnLoad"), (interrupts, "KeyboardInterrupt",
                                                                       "InterruptOnLoad")):
        error = future.exception(RESULT_WAIT)
        assert isinstance(error, RemoteError) and error.type_name == raised, error
        assert said in str(error) and "could not be unpickled" in str(error)
    assert ex.submit(workloads.square, 5).result(RESULT_WAIT) == 25


def test_a_map_chunk_whose_unpickling_raises_system_exit_fails_the_map_only(make_executor):
    ex = make_executor()
    seen = []
    with pytest.raises(RemoteError, match="SystemExit"):
        for value in ex.map(raising.exit_on_load, [0, 1, 2], chunksize=3, timeout=RESULT_WAIT):
            seen.append(value)
    assert seen in ([], [0])
    assert list(ex.map(workloads.square, range(5), timeout=RESULT_WAIT)) == [0, 1, 4, 9, 16]


def test_a_failing_initializer_breaks_the_executor_as_a_broken_process_pool(make_executor):
    try:
        ex = make_executor(initializer=raising.failing_initializer)
    except ConfigError as refused:
        pytest.skip(f"this backend does not take an initializer yet: {refused}")
    with pytest.raises(BrokenProcessPool) as caught:  # what ProcessPoolExecutor raises here, so code catches it
        ex.submit(workloads.square, 2).result(RESULT_WAIT)
    assert isinstance(caught.value, ClusterFuturesError) and isinstance(caught.value, cf.BrokenExecutor)
    try:
        later = ex.submit(workloads.square, 3)
    except cf.BrokenExecutor:
        return
    with pytest.raises(cf.BrokenExecutor):
        later.result(RESULT_WAIT)


TWO_TASKS = """
    import time

    def square(x):
        return x * x

    def nap(seconds):
        time.sleep(seconds)
        return seconds

    with ClusterPoolExecutor(**OPTIONS) as ex:
        assert ex.submit(square, 3).result(120) == 9
        assert ex.submit(square, 4).result(120) == 16
        if CANCEL:
            queued = [ex.submit(nap, 0.5) for _ in range(4)]
            ex.shutdown(cancel_futures=True)
    print("done")
"""


@pytest.mark.parametrize("cancel", [False, True], ids=["with", "cancel_futures"])
def test_a_run_that_succeeded_writes_nothing_on_stderr(backend, request, tmp_path, cancel):
    """Two tasks, then the ``with`` block ends (or ``shutdown(cancel_futures=True)`` with work queued): nothing
    from the library's machinery on stderr, 20 runs in 20 on the local pool, 3 in 3 on a scheduler (the
    clients run side by side: 4 at a time locally, the 3 together on a scheduler)."""
    options = backend_options(backend, request, tmp_path)
    runs, at_once = (20, 4) if backend == "local" else (3, 3)
    noisy = []
    for out in run_clients(tmp_path, options, f"CANCEL = {cancel}\n" + textwrap.dedent(TWO_TASKS), runs, at_once):
        assert out.returncode == 0 and out.stdout == "done\n", out.stderr
        if out.stderr:
            noisy.append(out.stderr)
    assert not noisy, f"{len(noisy)} of {runs} runs wrote on stderr; the first:\n{noisy[0]}"
