"""The ``sdiag`` RPC counts (:mod:`clustrix_futures.tools.sdiag`) on real outputs of the SLURM 22.05 of
tests/infra/slurm.sh (tests/data/sdiag-*.txt): ``sdiag-before.txt``; ``sdiag-after.txt`` after a 3-element
array (``sbatch --array=0-2 --wrap=true``, squeue polled until it ended); ``sdiag-after-reset.txt`` after
``sdiag -r`` (the counters back to 0, as a restart of slurmctld sets them) and a 2-element array.

The meter runs a stand-in ``sdiag`` on PATH that prints those files in turn, or fails as a cluster that does not
permit it would."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from clustrix_futures import config
from clustrix_futures.tools.sdiag import Meter, Rpcs, parse_sdiag

DATA = Path(__file__).parent.parent / "data"
BEFORE, AFTER, AFTER_RESET = (parse_sdiag((DATA / f"sdiag-{name}.txt").read_text())
                              for name in ("before", "after", "after-reset"))


def test_both_rpc_sections_of_a_real_output_are_read():
    assert len(BEFORE.types) == 20
    assert BEFORE.types["REQUEST_COMPLETE_BATCH_SCRIPT"] == 449
    assert BEFORE.types["REQUEST_STATS_INFO"] == 188
    assert BEFORE.types["REQUEST_UPDATE_JOB"] == 1
    assert BEFORE.users == Counter({"root": 1704, "cfuser": 1})
    assert "Jobs submitted" not in BEFORE.types  # the other statistics are not RPCs


def test_an_output_without_rpc_statistics_is_refused():
    with pytest.raises(ValueError, match="by message type"):
        parse_sdiag("sdiag: error: slurm_get_statistics: Access/permission denied\n")


def test_the_difference_of_two_readings_leaves_out_sdiags_own_rpc():
    rpcs = Rpcs()
    rpcs.add(BEFORE, AFTER)
    assert rpcs.types == Counter({"REQUEST_COMPLETE_BATCH_SCRIPT": 3, "REQUEST_PARTITION_INFO": 2,
                                  "REQUEST_FED_INFO": 2, "REQUEST_JOB_INFO_SINGLE": 2,
                                  "REQUEST_SUBMIT_BATCH_JOB": 1})
    assert rpcs.users == Counter({"root": 11})  # cfuser did nothing: no line of 0
    assert rpcs.own("root") == 10 == sum(rpcs.types.values())  # the sdiag that read BEFORE taken off
    assert (rpcs.windows, rpcs.restarts) == (1, 0)


def test_a_counter_reset_between_the_readings_counts_from_the_reset():
    rpcs = Rpcs()
    rpcs.add(AFTER, AFTER_RESET)
    assert rpcs.restarts == 1
    assert rpcs.types == Counter({"REQUEST_FED_INFO": 2, "REQUEST_JOB_INFO_SINGLE": 2, "REQUEST_PARTITION_INFO": 2,
                                  "REQUEST_COMPLETE_BATCH_SCRIPT": 2, "REQUEST_SUBMIT_BATCH_JOB": 1})
    assert all(n > 0 for n in rpcs.types.values())  # never a negative count from the fall
    assert rpcs.own("root") == 10  # the sdiag before the reset was counted by the old counters: nothing to take off
    assert rpcs.own("cfuser") == 0
    rpcs.add(BEFORE, AFTER)  # windows add up
    assert rpcs.types["REQUEST_COMPLETE_BATCH_SCRIPT"] == 5 and (rpcs.windows, rpcs.restarts) == (2, 1)


def fake_sdiag(directory: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A ``sdiag`` running the shell ``body``, first on PATH (``id``, for the user, stays the real one)."""
    script = directory / "sdiag"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:/usr/bin:/bin")


def test_the_meter_prints_rpcs_per_1000_tasks_and_the_reset(tmp_path, monkeypatch):
    files = " ".join(str(DATA / f"sdiag-{name}.txt") for name in ("before", "after", "after", "after-reset"))
    fake_sdiag(tmp_path, monkeypatch, f'n=$(cat {tmp_path}/n 2>/dev/null || echo 1); echo $((n + 1)) > {tmp_path}/n\n'
                                      f'set -- {files}; shift $((n - 1)); cat "$1"')
    meter = Meter(config.Settings("slurm", None, {}), settle=0)
    for tasks in (100, 100):  # before -> after, then after -> after-reset
        with meter.window(tasks):
            pass
    assert meter.problem == "" and meter.tasks == 200 and meter.user
    text = meter.format()
    lines = text.splitlines()
    assert "; 2 runs, 200 tasks in all" in lines[0]
    assert lines[1].split() == ["message", "type", "RPCs", "per", "1000", "tasks"]
    assert lines[2].split() == ["REQUEST_COMPLETE_BATCH_SCRIPT", "5", "25"]
    rows = [line.split()[0] for line in lines[2:] if line.startswith(("REQUEST_", "MESSAGE_"))]
    assert "REQUEST_SUBMIT_BATCH_JOB" in rows and "REQUEST_STATS_INFO" not in rows
    assert next(line for line in lines if line.startswith("all message types (all users)")).split()[-2:] == ["19", "95"]
    assert "counters were reset during 1 run(s)" in text


def test_a_failing_sdiag_is_one_line_and_the_run_goes_on(tmp_path, monkeypatch):
    fake_sdiag(tmp_path, monkeypatch, 'echo "sdiag: error: Access/permission denied" >&2; exit 1')
    meter = Meter(config.Settings("slurm", None, {}), settle=0)
    ran = []
    with meter.window(10):
        ran.append(True)
    with meter.window(10):  # no second attempt once it failed
        ran.append(True)
    assert ran == [True, True] and meter.tasks == 0
    assert meter.format().splitlines() == [
        "slurmctld RPCs: not counted: sdiag failed: on this machine: `sdiag` exited with 1: "
        "sdiag: error: Access/permission denied"]
    with pytest.raises(ZeroDivisionError), meter.window(10):  # the run's own exception goes on
        _ = 1 / 0
