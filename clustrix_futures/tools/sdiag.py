"""The RPCs a run costs slurmctld, from ``sdiag`` before and after it: the figure ``clustrix-futures bench``
prints under its table on SLURM, and the one ``benchmarks/bench_sdiag.py`` and ``benchmarks/bench_slurm.py``
compare across contenders.

``sdiag`` prints, among its statistics, "Remote Procedure Call statistics by message type" (every user's RPCs,
per type) and "by user" (every type, per user), each a count since slurmctld started or since ``sdiag -r``.
:func:`parse_sdiag` reads those two sections of one output into a :class:`Reading`; :meth:`Rpcs.add` adds the
difference between two readings. A count lower in the second reading than in the first means the counters were
set back to 0 in between (a restart of slurmctld, or ``sdiag -r``): the second reading's counts are then what
the window cost since the reset (what it cost before the reset is lost), and the window is counted in
``restarts``. Each ``sdiag`` is itself one RPC (REQUEST_STATS_INFO), counted in the next reading: the type is
left out of the types, and one per window is taken off the user who ran it (:meth:`Rpcs.own`).

:class:`Meter` takes the readings for a command-line tool: through the cluster's own transport (so on the SSH
host of a profile with ``host``, as the user the executor submits as), never raising: a reading that fails
(``sdiag`` not permitted or not installed, the host unreachable) ends the counting, and the table says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

from clustrix_futures import config
from clustrix_futures.remote.site import Site

SDIAG_ARGV = ["sdiag"]
USER_ARGV = ["id", "-un"]
IGNORED_TYPES = ("REQUEST_STATS_INFO",)  # sdiag's own RPC
SETTLE = 2.0  # seconds after a run before its second reading: the elements' completion RPCs arrive meanwhile
TOP_TYPES = 8  # message types a table shows, the most frequent first; and always:
SUBMIT_TYPE = "REQUEST_SUBMIT_BATCH_JOB"  # one a sbatch: the submissions, however busy the controller is
_BY_TYPE = "Remote Procedure Call statistics by message type"
_BY_USER = "Remote Procedure Call statistics by user"
_LINE = re.compile(r"^\s+(\S+)\s+\(\s*\d+\)\s+count:(\d+)")


@dataclass(frozen=True)
class Reading:
    """RPC counts since slurmctld's counters were last set to 0: by message type (all users) and by user."""

    types: Counter[str]
    users: Counter[str]


def parse_sdiag(text: str) -> Reading:
    """The two RPC sections of ``sdiag``'s output; ``ValueError`` if it has no "by message type" section."""
    types: Counter[str] = Counter()
    users: Counter[str] = Counter()
    section: Optional[Counter[str]] = None
    seen = False
    for line in text.splitlines():
        if line.startswith(_BY_TYPE):
            section, seen = types, True
        elif line.startswith(_BY_USER):
            section = users
        elif line and not line[0].isspace():
            section = None
        elif section is not None and (found := _LINE.match(line)):
            section[found.group(1)] += int(found.group(2))
    if not seen:
        raise ValueError(f"sdiag printed no {_BY_TYPE!r} section")
    return Reading(types, users)


@dataclass
class Rpcs:
    """RPCs summed over windows, each the difference of two readings (see the module docstring)."""

    types: Counter[str] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)
    windows: int = 0
    restarts: int = 0  # windows in which the counters were set back to 0

    def add(self, before: Reading, after: Reading) -> None:
        """Add what happened between ``before`` and ``after`` (since the reset, if the counters were reset)."""
        reset = (any(after.types[k] < n for k, n in before.types.items())
                 or any(after.users[k] < n for k, n in before.users.items()))
        base = Reading(Counter(), Counter()) if reset else before
        self.types.update({k: n - base.types[k] for k, n in after.types.items()
                           if n != base.types[k] and k not in IGNORED_TYPES})
        self.users.update({k: n - base.users[k] for k, n in after.users.items() if n != base.users[k]})
        self.windows += 1
        self.restarts += reset

    def own(self, user: str) -> int:
        """``user``'s RPCs, less the ``sdiag`` calls that opened the windows (lost in a window with a reset)."""
        return max(0, self.users[user] - (self.windows - self.restarts))


class Meter:
    """``sdiag`` before and after each run (:meth:`window`), through the transport of ``settings``' cluster.

    Never raises: the first reading that fails sets :attr:`problem` and ends the counting, the windows
    measured before it kept. :attr:`tasks` sums the tasks of the windows measured."""

    def __init__(self, settings: config.Settings, settle: float = SETTLE) -> None:
        self.settings = settings
        self.settle = settle
        self.rpcs = Rpcs()
        self.tasks = 0
        self.user = ""  # the user sdiag runs as there, from the first reading
        self.problem = ""

    @contextlib.contextmanager
    def window(self, tasks: int) -> Iterator[None]:
        """Read before the body and ``settle`` s after it; count the difference as the RPCs of ``tasks`` tasks.
        A body that raises is not counted (its exception goes on)."""
        before = self._reading()
        yield
        if before is None:
            return
        time.sleep(self.settle)
        after = self._reading()
        if after is not None:
            self.rpcs.add(before, after)
            self.tasks += tasks

    def _reading(self) -> Optional[Reading]:
        if self.problem:
            return None
        try:
            return asyncio.run(self._read())
        except Exception as exc:  # an RPC count is never worth failing the run it measures
            self.problem = str(exc).strip() or type(exc).__name__
            return None

    async def _read(self) -> Reading:
        async with Site(self.settings) as site:
            if not self.user:
                found = await site.transport.run(USER_ARGV)
                if not found.ok or not found.stdout.strip():
                    raise RuntimeError(f"cannot tell the user on {site.where()}: {found.describe()}")
                self.user = found.stdout.strip()
            answer = await site.transport.run(SDIAG_ARGV)
            if not answer.ok:
                raise RuntimeError(f"on {site.where()}: {answer.describe()}")
            return parse_sdiag(answer.stdout)

    def format(self) -> str:
        """The RPCs per 1000 tasks by message type (the :data:`TOP_TYPES` most frequent, and
        :data:`SUBMIT_TYPE`), all users' and the user's total; a line saying why not when nothing was measured,
        and why the counting stopped if it did."""
        if not self.rpcs.windows:
            return f"slurmctld RPCs: not counted: sdiag failed: {self.problem}"
        per = 1000 / self.tasks if self.tasks else 0.0
        rows = list(self.rpcs.types.most_common(TOP_TYPES))
        if SUBMIT_TYPE not in dict(rows):
            rows.append((SUBMIT_TYPE, self.rpcs.types[SUBMIT_TYPE]))
        rows += [("all message types (all users)", sum(self.rpcs.types.values())),
                 (f"all message types, user {self.user}", self.rpcs.own(self.user))]
        width = max(len(name) for name, _ in rows)
        runs = f"{self.rpcs.windows} run{'s' if self.rpcs.windows != 1 else ''}"
        lines = [f"slurmctld RPCs of the cluster runs (sdiag before and {self.settle:g} s after each; {runs}, "
                 f"{self.tasks:,} tasks in all):",
                 f"{'message type':<{width}}  {'RPCs':>8}  {'per 1000 tasks':>14}",
                 *(f"{name:<{width}}  {count:>8,}  {count * per:>14,.0f}" for name, count in rows),
                 "(sdiag's own REQUEST_STATS_INFO left out; the controller is shared: the message types count "
                 "every user's RPCs in the windows)"]
        if self.rpcs.restarts:
            lines.append(f"slurmctld's counters were reset during {self.rpcs.restarts} run(s): only the RPCs "
                         "after the reset are counted there")
        if self.problem:
            lines.append(f"the counting stopped after {self.rpcs.windows} run(s): sdiag failed: {self.problem}")
        return "\n".join(lines)
