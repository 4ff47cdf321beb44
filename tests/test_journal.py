"""The result journal, version 2 (clustrix_futures.runfiles.journal): its frames, written by a real element
(the worker run as a job runs it), and what a client does with a journal of a version it does not know."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from support import workloads

from clustrix_futures import JobFailedError
from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.batches import encode_batch
from clustrix_futures.runfiles.layout import SUBDIRECTORIES, RunDir
from clustrix_futures.runfiles.outcomes import encode_outcome, loads_outcome

TESTS = Path(__file__).parent
FUTURE_VERSION = journal.VERSION + 97


def outcome(value: object) -> bytes:
    return encode_outcome((True, value, "", 0.0))[1]


def sample() -> bytes:
    return b"".join([journal.preamble(),
                     journal.encode_frame(4, journal.OK, 10.0, 11.5, outcome(16)),
                     journal.encode_frame(5, journal.SKIPPED, 11.5, 11.5),
                     journal.encode_frame(6, journal.RAISED, 11.5, 12.0, outcome("boom"))])


def test_headers_are_read_without_the_bodies_and_outcomes_in_order():
    data = sample()
    frames = list(journal.read_frames(data))
    assert [(f.task_id, f.kind, f.start, f.end) for f in frames] == [
        (4, journal.OK, 10.0, 11.5), (5, journal.SKIPPED, 11.5, 11.5), (6, journal.RAISED, 11.5, 12.0)]
    assert frames[1].size == 0 and data[frames[0].offset:frames[0].offset + frames[0].size] == outcome(16)
    assert [(task_id, loads_outcome(body)[1]) for task_id, body in journal.read_journal(data)] == [(4, 16), (6, "boom")]


def test_a_torn_journal_ends_quietly_after_its_whole_frames():
    data = sample()
    whole_first = journal.PREAMBLE.size + journal.HEADER.size + len(outcome(16))
    for cut in range(len(data)):
        expected = [4] if cut >= whole_first else []
        assert [task_id for task_id, _ in journal.read_journal(data[:cut])] == expected, cut


def test_a_damaged_frame_raises_after_the_good_ones():
    good = journal.preamble() + journal.encode_frame(1, journal.OK, 0.0, 1.0, outcome(1))
    for damage in (journal.encode_frame(2, 77, 0.0, 1.0, outcome(2)),  # no such kind
                   journal.encode_frame(2, journal.OK, 0.0, 1.0, b"not a pickle at all")):
        after = journal.encode_frame(3, journal.OK, 0.0, 1.0, outcome(3))
        seen = []
        with pytest.raises(ValueError, match="frame at byte"):
            for task_id, _ in journal.read_journal(good + damage + after):
                seen.append(task_id)
        assert seen == [1]


@pytest.mark.parametrize("start", [struct.pack("<4sH", journal.MAGIC, FUTURE_VERSION),
                                   struct.pack("<I", 20) + pickle.dumps((0, outcome(0)))])  # a version-1 journal
def test_another_version_is_refused_saying_which_version_this_client_reads(start):
    with pytest.raises(journal.UnknownJournalVersion, match=f"reads journal version {journal.VERSION}") as caught:
        list(journal.read_journal(start + journal.encode_frame(0, journal.OK, 0.0, 1.0, outcome(0))))
    assert isinstance(caught.value, ValueError)
    assert start[:4] != journal.MAGIC or f"version {FUTURE_VERSION}, unknown to this client" in str(caught.value)


def test_an_element_journals_each_task_with_its_kind_and_wall_times(tmp_path):
    """The worker as a job runs it (through the old entry point's shim), on a batch made here."""
    run_dir = RunDir(str(tmp_path))
    for sub in SUBDIRECTORIES:
        (tmp_path / sub).mkdir()
    calls = [(0, (workloads.sleep_then, (0.2, "slept"), {})), (1, (workloads.square, (5,), {})),
             (2, (workloads.fail_at, (2, 2), {}))]
    Path(run_dir.batch_file(0)).write_bytes(encode_batch([[(tid, cloudpickle.dumps(c)) for tid, c in calls]]))
    Path(run_dir.skip(1)).touch()
    before = time.time()
    subprocess.run([sys.executable, "-m", "clustrix_futures.worker", "element", run_dir.root, "0", "0"], check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}, timeout=120)
    after = time.time()
    assert not Path(run_dir.partial(0, 0)).exists()
    every = list(journal.read_frames(Path(run_dir.result(0, 0)).read_bytes()))
    assert [(f.task_id, f.kind) for f in every] == [(journal.ELEMENT, journal.PROGRESS), (0, journal.PROGRESS),
                                                    (0, journal.OK), (2, journal.PROGRESS), (2, journal.RAISED),
                                                    (journal.ELEMENT, journal.PROGRESS)]  # MEASURE frames around
    every = [f for f in every if f.task_id != journal.ELEMENT]
    frames = [f for f in every if f.kind != journal.PROGRESS]
    assert before <= frames[0].start and frames[0].start + 0.2 <= frames[0].end <= frames[1].start
    assert frames[1].start <= frames[1].end <= after


def make_own_journal_of_version(version: int) -> str:
    """Run inside an array element: rewrite the version of the journal this element is writing."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".part"):
            os.pwrite(int(fd), struct.pack("<4sH", journal.MAGIC, version), 0)
            return target
    raise RuntimeError("no journal open in this process")


@pytest.mark.slurm
def test_a_journal_of_an_unknown_version_fails_its_tasks_saying_so(slurm_executor):
    """A real SLURM element whose result file says it is of a later journal version: its tasks fail with
    CORRUPTED_RESULT and the reason; the executor goes on."""
    ex = slurm_executor()
    with pytest.raises(JobFailedError) as caught:
        ex.submit(make_own_journal_of_version, FUTURE_VERSION).result(120)
    assert caught.value.state == "CORRUPTED_RESULT"
    assert (f"journal is of version {FUTURE_VERSION}, unknown to this client, which reads journal version "
            f"{journal.VERSION}") in str(caught.value)
    assert ex.submit(workloads.square, 4).result(120) == 16


def test_output_spans_run_from_a_task_start_to_the_next():
    body = cloudpickle.dumps((True, 1, "", 0.0))
    data = (journal.preamble() + journal.output_frame(4, 1.0, 10, 0) + journal.encode_frame(4, journal.OK, 1, 2, body)
            + journal.output_frame(5, 2.0, 25, 7) + journal.encode_frame(5, journal.OK, 2, 3, body))
    assert journal.output_spans(data, 4) == ((10, 25), (0, 7))
    assert journal.output_spans(data, 5) == ((25, None), (7, None))
    assert journal.output_spans(data, 6) is None
    assert [tid for tid, _ in journal.read_journal(data)] == [4, 5]  # outcome readers pass over them


def test_a_map_chunk_with_an_item_that_raised_is_journalled_as_raised(tmp_path):
    """status counts outcomes from frame headers alone: a chunk whose item raised must not read as succeeded."""
    from clustrix_futures.node.calls import apply_chunk

    run_dir = RunDir(str(tmp_path))
    for sub in SUBDIRECTORIES:
        (tmp_path / sub).mkdir()
    calls = [(0, (apply_chunk, (workloads.square, [1, 2], False), {})),
             (1, (apply_chunk, (workloads.fail_at, [(1, 9), (2, 2), (3, 9)], True), {}))]
    Path(run_dir.batch_file(0)).write_bytes(encode_batch([[(tid, cloudpickle.dumps(c)) for tid, c in calls]]))
    subprocess.run([sys.executable, "-m", "clustrix_futures.node.worker", "element", run_dir.root, "0", "0"],
                   check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}, timeout=120)
    kinds = {f.task_id: f.kind for f in journal.read_frames(Path(run_dir.result(0, 0)).read_bytes())
             if f.kind != journal.PROGRESS}
    assert kinds == {0: journal.OK, 1: journal.RAISED}


def test_a_checkpoint_frame_is_no_outcome_and_the_cursor_notes_its_task() -> None:
    from clustrix_futures.runfiles.parts import JournalCursor

    four = outcome(4)
    data = journal.preamble() + journal.encode_frame(1, journal.OK, 0.0, 1.0, four) + journal.checkpoint_frame(2, 2.0)
    assert list(journal.read_journal(data)) == [(1, four)]
    assert journal.output_spans(data, 2) is None and journal.read_measures(data) == []
    cursor = JournalCursor()
    assert [task_id for task_id, _, _ in cursor.feed(data)] == [1]
    assert cursor.checkpointed == [2] and cursor.offset == len(data)
