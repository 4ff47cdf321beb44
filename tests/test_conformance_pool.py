"""ProcessPoolExecutor's signature on every backend: ``mp_context`` and ``max_tasks_per_child`` are accepted
(keyword or, for ``mp_context``, by position), ``_max_workers`` exists, and no process runs more tasks than
``max_tasks_per_child`` (a local worker is recycled; on a scheduler an array element packs at most that many).
"""

from __future__ import annotations

import multiprocessing
import os
import socket

import pytest

from clustrix_futures import ConfigError

RESULT_WAIT = 180  # seconds: generous, several arrays on a busy 2-core machine


def where() -> tuple[str, int]:
    """The process running this task: its host (a pod's name on Kubernetes) and pid."""
    return socket.gethostname(), os.getpid()


def test_max_tasks_per_child_bounds_the_tasks_one_process_runs(make_executor, backend):
    # tasks_per_element=10 would pack the six tasks into one element: the limit must win
    ex = make_executor(2, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=2,
                       **({} if backend == "local" else {"tasks_per_element": 10}))
    assert ex._max_workers == 2
    seen = [f.result(RESULT_WAIT) for f in [ex.submit(where) for _ in range(6)]]
    counts = {process: seen.count(process) for process in seen}
    assert max(counts.values()) <= 2, counts
    assert len(counts) >= 3


def test_max_workers_default_is_exposed(make_executor):
    ex = make_executor()
    assert ex._max_workers == (ex.settings.max_workers or os.cpu_count() or 1)
    assert ex.submit(pow, 2, 3).result(RESULT_WAIT) == 8


@pytest.mark.parametrize("value", [0, "1"])
def test_a_bad_max_tasks_per_child_is_refused_before_anything_runs(make_executor, value):
    with pytest.raises((TypeError, ValueError), match="max_tasks_per_child"):
        make_executor(1, max_tasks_per_child=value)


def test_a_fork_context_is_refused(make_executor):
    with pytest.raises(ConfigError, match="fresh interpreters"):
        make_executor(1, mp_context=multiprocessing.get_context("fork"))
