"""A fake :class:`~clustrix_futures.schedulers.command.Scheduler` for the unit tier: no infrastructure, and each
array element's fate decided by the test.

Elements really run: the fake runs the real worker (``python -m clustrix_futures.node.worker element RUN B I``,
in this process or, with ``in_subprocess=True``, as a child process) over a temporary run directory on the local
transport, so result files are the real ones. What the fake decides is what a scheduler would: when an element
runs (at the first status query after its submission, so a submission is seen queued first), how it ends (its
final state), whether it ran at all, whether the scheduler still knows it afterwards, and damage to its result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from clustrix_futures.runfiles import journal
from clustrix_futures.runfiles.layout import RunDir
from clustrix_futures.schedulers.base import ArraySubmission, ElementKey, FinalState, Limits, StatusReport

TESTS = str(Path(__file__).parent.parent)


@dataclass(frozen=True)
class Fate:
    """How one run (attempt) of one element goes.

    ``ran``: the worker runs the element; False: it leaves the queue without running (no result file).
    ``state``: the final state the scheduler reports for it. ``forgotten``: the scheduler no longer knows it
    (``final`` leaves it out). ``stops_before``: task ids the element never reaches (it dies first: its journal
    stays ``B-I.part``). ``corrupt``: the last byte of its last outcome frame is damaged (that frame is unreadable,
    the frames before it are intact). ``stderr``: what its log ends with.
    """

    ran: bool = True
    state: str = "COMPLETED"
    forgotten: bool = False
    stops_before: tuple[int, ...] = ()
    corrupt: bool = False
    stderr: bytes = b""


@dataclass
class FakeElement:
    job_id: str
    batch: int
    index: int
    attempt: int
    fate: Fate
    ended: bool = False


class FakeScheduler:
    """Implements the Scheduler protocol; ``fates[(batch, index, attempt)]`` (attempts count from 1) decides each
    element run, :class:`Fate` () by default. ``submissions`` and ``finals_asked`` record what the monitor did."""

    name = "fake"
    index_placeholder = "%a"

    def __init__(self, run_dir: RunDir, fates: Optional[dict[tuple[int, int, int], Fate]] = None,
                 in_subprocess: bool = False) -> None:
        self.run_dir = run_dir
        self.fates = dict(fates or {})
        self.in_subprocess = in_subprocess
        self.commands: dict[str, int] = {}
        self.elements: dict[ElementKey, FakeElement] = {}
        self.submissions: list[ArraySubmission] = []
        self.finals_asked: list[str] = []
        self.cancelled: list[ElementKey] = []
        self._attempts: dict[tuple[int, int], int] = {}
        self.partition_limits = Limits()

    def _count(self, command: str) -> None:
        self.commands[command] = self.commands.get(command, 0) + 1

    async def max_array_size(self) -> Optional[int]:
        return None

    async def limits(self, partition: Optional[str]) -> Limits:
        return self.partition_limits

    async def submit(self, job: ArraySubmission, script: str) -> str:
        self._count("submit")
        job_id = str(1000 + len(self.submissions))
        self.submissions.append(job)
        for index in range(job.start, job.last + 1):
            attempt = self._attempts[(job.batch, index)] = self._attempts.get((job.batch, index), 0) + 1
            fate = self.fates.get((job.batch, index, attempt), Fate())
            self.elements[(job_id, index)] = FakeElement(job_id, job.batch, index, attempt, fate)
        return job_id

    async def status(self, job_ids: Sequence[str]) -> Optional[StatusReport]:
        """Queued elements of these jobs run now (as their fate says) and end: the report shows none of them."""
        self._count("status")
        for element in list(self.elements.values()):
            if element.job_id in job_ids and not element.ended:
                await self._end(element)
        return StatusReport()

    async def final(self, job_id: str) -> Optional[dict[ElementKey, FinalState]]:
        self._count("final")
        self.finals_asked.append(job_id)
        return {key: FinalState(e.fate.state) for key, e in self.elements.items()
                if e.job_id == job_id and e.ended and not e.fate.forgotten}

    async def cancel(self, elements: Sequence[ElementKey]) -> set[ElementKey]:
        self._count("cancel")
        for key in elements:
            self.cancelled.append(key)
            self.elements[key].ended = True
        return set()

    async def log_tail(self, key: ElementKey, batch: int, size: int) -> bytes:
        element = self.elements.get(key)
        return element.fate.stderr[-size:] if element is not None else b""

    async def close(self, remove: bool) -> None:
        pass

    # ------------------------------------------------------------ running elements

    async def _end(self, element: FakeElement) -> None:
        element.ended = True
        fate = element.fate
        if not fate.ran:
            return
        markers = [Path(self.run_dir.skip(task_id)) for task_id in fate.stops_before]
        for marker in markers:  # the worker never reaches these tasks
            marker.touch()
        try:
            await self.run_element(element.batch, element.index)
        finally:
            for marker in markers:
                marker.unlink()
        result = Path(self.run_dir.result(element.batch, element.index))
        if fate.stops_before:  # it died before the end: its journal was never completed
            result.rename(self.run_dir.partial(element.batch, element.index))
        elif fate.corrupt:
            data = result.read_bytes()  # damage the last byte of the last outcome frame (its pickle's STOP)
            last = [f for f in journal.read_frames(data) if f.kind in (journal.OK, journal.RAISED)][-1]
            at = last.offset + last.size - 1
            result.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])

    async def run_element(self, batch: int, index: int) -> None:
        """Run the real worker on element ``index`` of ``batch`` (the test may call this itself: a late run)."""
        argv = ["element", self.run_dir.root, str(batch), str(index)]
        if not self.in_subprocess:
            from clustrix_futures.node import worker

            worker.main(argv)
            return
        # blocking on purpose: nothing of the monitor runs while the element does (deterministic)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", "clustrix_futures.node.worker", *argv], env=env, check=False)
