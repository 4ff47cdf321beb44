"""``backend="debug"``: tasks run in the calling thread at ``submit``, the call and the result still pickled.

The conformance cases that make sense in one thread run here too (imported from ``test_conformance``, with
``backend`` fixed to ``debug``); those that need a task still queued or running while the caller goes on
(cancellation, timeouts, signal files, dying workers) do not.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import workloads
from test_conformance import (  # noqa: F401  (collected here with the debug backend)
    test_chunksizes_give_identical_results,
    test_context_manager_waits_for_work,
    test_exception_keeps_type_and_remote_traceback,
    test_exception_that_cannot_come_back_becomes_remote_error,
    test_generator_is_not_read_ahead_beyond_buffersize,
    test_invalid_arguments,
    test_lambdas_and_closures_run,
    test_map_over_two_iterables_keeps_order,
    test_map_raises_at_exactly_the_failing_item,
    test_submit_reserves_no_keyword_names,
    test_submit_returns_a_stdlib_future,
    test_unpicklable_argument_raises_in_submit,
    test_unpicklable_result_fails_its_future_clearly,
)

from clustrix_futures import ClusterPoolExecutor


@pytest.fixture
def backend() -> str:
    return "debug"


@pytest.fixture
def make_executor(tmp_path: Path) -> Iterator[Any]:
    created: list[ClusterPoolExecutor] = []

    def make(max_workers: Any = None, **options: Any) -> ClusterPoolExecutor:
        executor = ClusterPoolExecutor(max_workers, backend="debug", **options)
        created.append(executor)
        return executor

    yield make
    for executor in created:
        executor.shutdown()


def _thread_and_stop() -> int:
    breakpoint()
    return threading.get_ident()


def test_task_runs_in_the_calling_thread_and_reaches_the_breakpoint_hook(make_executor, monkeypatch):
    reached = []

    def hook(*args: Any, **kwargs: Any) -> None:
        reached.append((threading.get_ident(), sys._getframe(1).f_code.co_name))

    monkeypatch.setattr(sys, "breakpointhook", hook)
    future = make_executor().submit(_thread_and_stop)
    assert future.done()  # ran inside submit
    assert future.result() == threading.get_ident()
    assert reached == [(threading.get_ident(), "_thread_and_stop")]


def test_exception_keeps_its_live_traceback(make_executor):
    future = make_executor().submit(workloads.raise_custom, "boom")
    error = future.exception()
    assert isinstance(error, workloads.CustomError)
    frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert frames[-1] == "raise_custom"  # pdb.post_mortem(error.__traceback__) lands in the task


def test_initializer_runs_in_the_caller(make_executor):
    ex = make_executor(initializer=workloads.initialize, initargs=("ready",))
    assert ex.submit(workloads.initialized).result() == ["ready"]
    assert workloads.initialized() == ["ready"]  # the same process


def test_result_makes_the_pickle_round_trip(make_executor):
    value = {"a": [1, 2]}
    result = make_executor().submit(workloads.echo, value).result()
    assert result == ((value,), {}) and result[0][0] is not value
