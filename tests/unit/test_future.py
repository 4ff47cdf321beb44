"""The monitor's marks on a future (``_started``), whatever state the future reached first."""

from __future__ import annotations

from clustrix_futures.future import ClusterFuture


def test_a_report_of_its_element_running_starts_a_pending_task_only():
    """An element's tasks are marked running when a status report shows it so; by then one of them may have
    finished (its result was read first) or been cancelled: neither changes, and nothing raises (the stdlib's
    ``set_running_or_notify_cancel`` raises for a finished future, which stopped the job monitor)."""
    pending, finished, cancelled = ClusterFuture(1), ClusterFuture(2), ClusterFuture(3)
    finished.set_running_or_notify_cancel()
    finished.set_result(7)
    assert cancelled.cancel()
    for future in (pending, finished, cancelled):
        future._started("RUNNING")
        future._started("RUNNING")
    assert pending.running()
    assert finished.result() == 7
    assert cancelled.cancelled()
