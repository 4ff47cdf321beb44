"""Job scripts quote every value we insert, the header comment included: run under real bash, a newline or
shell syntax in the run directory, the interpreter path or an ``env`` value runs nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clustrix_futures.runfiles.layout import RunDir, job_script


def test_hostile_run_directory_and_values_inject_nothing(tmp_path: Path):
    marker = tmp_path / "injected"
    hostile = f"\ntouch {marker}\n'; touch {marker}; '$(touch {marker})`touch {marker}`"
    record = tmp_path / "record.sh"  # stands in for python: records the words it got
    record.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nprintf "%s" "$CF_X" > "$0.env"\n')
    record.chmod(0o700)
    script = tmp_path / "job.sh"
    script.write_text(job_script(RunDir(f"{tmp_path}/w{hostile}"), 3, str(record), [], staged=True,
                                 env={"CF_X": hostile}))
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "a value inserted into the job script ran as a command"
    assert Path(f"{record}.args").read_text().split("\n")[3:5] == [f"{tmp_path}/w", f"touch {marker}"]
    assert Path(f"{record}.env").read_text() == hostile


def test_env_names_must_be_shell_identifiers():
    with pytest.raises(ValueError, match="not environment variable names"):
        job_script(RunDir("/r"), 0, "python3", [], staged=False, env={"A;touch x": "1"})
