"""Counting scheduler commands: a directory of shims put first on PATH, each logging ``epoch command args...``
to one file and then running the real command. The monitor runs its commands as subprocesses of this process,
so it finds the shims; SLURM jobs inherit PATH from sbatch, which is harmless (the shims run the real thing)."""

from __future__ import annotations

import shutil
from pathlib import Path

SCHEDULER_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sacct", "qsub", "qstat", "qdel", "qacct")


class Shim:
    """Logs ``epoch command args...`` for every scheduler command found on PATH now, then runs the real one
    (so the PATH that selects a scheduler's commands must be set before the shim is made)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log = directory / "calls.log"
        self.log.touch()
        for command in SCHEDULER_COMMANDS:
            real = shutil.which(command)
            if real is None:
                continue
            script = directory / command
            script.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {command} $*" >> {self.log}\nexec {real} "$@"\n')
            script.chmod(0o755)

    def calls(self, command: str) -> list[list[str]]:
        """The arguments of every call of ``command`` so far, in order."""
        lines = self.log.read_text().splitlines()
        return [line.split()[2:] for line in lines if line.split()[1] == command]

    def times(self, command: str) -> list[float]:
        """When each call of ``command`` started (epoch seconds)."""
        return [float(line.split()[0]) for line in self.log.read_text().splitlines() if line.split()[1] == command]
