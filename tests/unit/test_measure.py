"""MEASURE frames (:mod:`clustrix_futures.node.measure`): readers of outcomes and output spans pass over them, and
:func:`~clustrix_futures.runfiles.journal.read_measures` reads them back."""

from __future__ import annotations

import os
from pathlib import Path

from clustrix_futures.node import measure
from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.layout import RunDir
from clustrix_futures.runfiles.outcomes import encode_outcome


def test_measure_frames_are_passed_over_by_outcome_and_output_readers_and_read_back(tmp_path: Path) -> None:
    run_dir = RunDir(str(tmp_path))
    (tmp_path / "batches").mkdir()
    Path(run_dir.batch_file(0)).write_bytes(b"batch")
    path = tmp_path / "journal"
    with open(path, "wb") as results:
        results.write(journal.preamble())
        results.flush()
        measure.write_start(results.fileno(), run_dir, 0)
        results.write(journal.output_frame(7, 1.0, 10, 20))
        _, outcome = encode_outcome((True, 49, "", 0.1))
        results.write(journal.encode_frame(7, journal.OK, 1.0, 2.0, outcome))
        bytearray(10_000_000)  # some memory, so the peak is not nothing
        results.write(measure.end_frame())
    data = path.read_bytes()
    assert list(journal.read_journal(data)) == [(7, outcome)]
    assert journal.output_spans(data, 7) == ((10, None), (20, None))
    start, end = journal.read_measures(data)
    assert (start.phase, end.phase) == (journal.MEASURE_START, journal.MEASURE_END)
    assert start.node == end.node == os.uname().nodename
    assert start.batch_mtime == os.stat(run_dir.batch_file(0)).st_mtime and start.script_mtime == 0.0
    assert start.journal_mtime >= start.batch_mtime and end.journal_mtime == 0.0
    assert end.start == start.start <= end.end and end.cpu >= start.cpu > 0 and end.rss >= start.rss > 1 << 20
