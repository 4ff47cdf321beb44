"""The cold start's contract on every backend (the ``make_executor``/``backend`` fixtures): a fresh executor's
burst of submits is right, and a task that blocks does not hold back the tasks submitted with it (on schedulers
they are packed under the time budget, and what the blocked element has not started is given back)."""

from __future__ import annotations

import shlex
from pathlib import Path

from support import workloads
from support.waiting import RESULT_WAIT

REPO = Path(__file__).resolve().parent.parent


def test_a_cold_burst_of_submits_is_right_and_in_order(make_executor):
    ex = make_executor()
    futures = [ex.submit(workloads.add, i, 1) for i in range(40)]
    assert [f.result(RESULT_WAIT) for f in futures] == [i + 1 for i in range(40)]


def test_a_blocked_task_does_not_hold_back_the_tasks_of_its_burst(make_executor, signals, backend):
    # Grid Engine's jobs do not inherit this process's environment (qsub without -V): PYTHONPATH is set in the job
    # script, so its elements run the worker under test (one that claims tasks), not another installed one
    options = {"setup": [f"export PYTHONPATH={shlex.quote(str(REPO))}"]} if backend == "sge" else {}
    ex = make_executor(4, element_seconds=1, **options)  # a burst of 7 over 4 elements: [0], [1, 2], [3, 4], [5, 6]
    gate = signals / "gate"
    futures = [ex.submit(workloads.gated_record, str(signals), str(gate) if i == 1 else "", i) for i in range(7)]
    assert [f.result(RESULT_WAIT) for f in futures[2:]] == [i * i for i in range(2, 7)]
    assert not futures[1].done()
    gate.touch()
    assert futures[1].result(RESULT_WAIT) == 1 and futures[0].result(RESULT_WAIT) == 0
    assert workloads.runs_recorded(signals) == {i: 1 for i in range(7)}  # each ran exactly once
