"""Grid Engine (Son of Grid Engine 8.1 and its family): ``qsub -t`` arrays, ONE ``qstat -xml`` per cycle for
every job of the user, ``qdel JOB -t RANGE`` to cancel, ``qacct -j`` for the state of ended tasks.

Grid Engine numbers array tasks from 1 and our elements from 0, and its ``-o``/``-e`` paths can only name a
task by its own number (``$TASK_ID``). So each task runs a small launcher instead of the script itself: a
binary submission (``-b y -shell no``: the words reach bash unchanged, no shell parses them) of
``/bin/bash -c LAUNCHER``, which sets ``CLUSTRIX_ARRAY_INDEX`` (the index variable the worker reads first)
to ``SGE_TASK_ID - 1``, sends stdout and stderr to the element's own ``logs/B-I.out|err``, and runs the
element's script. Task ``I + 1`` is element ``I`` everywhere in this module.

Resources: ``cpus`` become ``-pe PE cpus`` when the option ``pe`` names a parallel environment (Grid Engine
has no other way to ask for several slots; without ``pe`` the request is one slot); ``mem`` becomes
``-l h_vmem=`` per slot (the element's memory divided by its slots); ``time`` becomes ``-l h_rt=`` in
seconds; ``partition`` is the queue (``-q``), ``account`` is ``-A``; ``gpus`` becomes ``-l gpu=N``, the
usual name of a site-defined GPU complex. ``nodes`` has no Grid Engine meaning outside a parallel
environment and is not sent.

Limits (``retry_policy``'s cap, from ``qconf -sq``): ``h_vmem`` and ``h_rt`` of the ``partition``'s queue, or,
without one, of every queue (Grid Engine has no default queue: it puts such a job in any that fits). An element
that asks for none runs under the queue's own, so they are the defaults as well. ``h_vmem`` is per slot, and so
is the cap: an element with a parallel environment stops growing early. An element over its ``h_vmem`` is not
killed by Grid Engine: the limit is its address space (``setrlimit``), so an allocation fails in the task.

Final states from ``qacct`` (its ``failed`` and ``exit_status`` fields): ``failed 37`` ("qmaster enforced
h_rt, h_cpu, or h_vmem limit") is TIMEOUT; an exit status above 128 is KILLED (by that signal: ``qdel`` of a
running task gives ``failed 100`` and 137, as does any SIGKILL, so the two cannot be told apart); other
failures are FAILED with Grid Engine's reason. A task deleted before it started leaves no accounting record.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Optional

from clustrix_futures.schedulers.base import (
    ArraySubmission,
    BackendContext,
    ElementKey,
    FinalState,
    Limits,
    StatusReport,
)
from clustrix_futures.schedulers.command import CommandBackend, phase_of, report
from clustrix_futures.schedulers.units import Resources, clock_seconds, expand_ranges, size_megabytes

# bash -c LAUNCHER NAME OUT_PREFIX OUT_SUFFIX ERR_PREFIX ERR_SUFFIX SCRIPT
LAUNCHER = ('i=$((SGE_TASK_ID - 1)); export CLUSTRIX_ARRAY_INDEX="$i"; '
            'exec >>"$1$i$2" 2>>"$3$i$4"; exec /bin/bash "$5"')
_TRANSIENT = ("commlib error", "unable to contact qmaster", "unable to send message to qmaster",
              "failed receiving gdi request", "Connection refused", "can't connect to service")
_NAME_UNSAFE = r"[\s/:@\\*?]"  # refused in Grid Engine object names (and names may not start with a digit)
_TIMEOUT_FAILURE = "37"
_ANY_QUEUE = "*"
# sge_types(5): K, M, G, T are powers of 1024, k, m, g, t of 1000; a bare number is bytes
_MEMORY_UNITS = {"": 1, **{unit: 1024 ** power for power, unit in enumerate("KMGT", 1)},
                 **{unit: 1000 ** power for power, unit in enumerate("kmgt", 1)}}


def _phase(state: str) -> str:
    """Grid Engine's state letters (``qw``, ``hqw``, ``r``, ``t``, ``Rr``, ``dr``, ``s``, ``Eqw``...) to a phase:
    running (``r``, or ``t`` transferring to the host) or else queued. An error state (``E``) never runs without
    an administrator: it counts as ended, so its futures fail."""
    letter = "E" if "E" in state else "r" if "r" in state or "t" in state else "q"
    return phase_of(letter, queued={"q"}, running={"r"})


def _final(fields: Mapping[str, str]) -> FinalState:
    failed, exit_status = (" ".join(fields.get(name, "0").split()) for name in ("failed", "exit_status"))
    code = failed.split(":")[0].strip()
    status = int(exit_status.split()[0]) if exit_status.split() else 0
    detail = f"failed {failed}, exit status {exit_status}"
    if code == _TIMEOUT_FAILURE:
        return FinalState("TIMEOUT", detail)
    if status > 128:
        return FinalState("KILLED", f"{detail}: killed by signal {status - 128} (qdel, a limit, or the system)")
    if code != "0" or status != 0:
        return FinalState("FAILED", detail)
    return FinalState("COMPLETED", detail)


class SgeBackend(CommandBackend):
    name = "sge"
    index_placeholder = "{index}"  # replaced by the launcher, not by Grid Engine
    transient_markers = _TRANSIENT
    max_array_pattern = r"^max_aj_tasks\s+(\d+)"

    def __init__(self, context: BackendContext) -> None:
        self.run_dir = context.run_dir

    def config_argv(self) -> Optional[list[str]]:
        return ["qconf", "-sconf", "global"]

    def limits_argv(self, partition: Optional[str]) -> Optional[list[str]]:
        return ["qconf", "-sq", partition or _ANY_QUEUE]  # -q takes a queue list or pattern, and so does -sq

    def parse_limits(self, stdout: str) -> Limits:
        """The largest ``h_vmem`` and ``h_rt`` any batch queue listed applies (an element may go to any of
        them), each None where one of them sets no limit (``INFINITY``) or one this cannot read."""
        queues = _queue_configs(stdout)
        mem = _largest(queues, "h_vmem", lambda value: size_megabytes(value, _MEMORY_UNITS))
        seconds = _largest(queues, "h_rt", clock_seconds)
        return Limits(mem_mb=mem, seconds=seconds, default_mem_mb=mem, default_seconds=seconds)

    def submit_argv(self, job: ArraySubmission, script_path: str) -> list[str]:
        resources = Resources(job.resources)
        name = resources.name(_NAME_UNSAFE)
        argv = ["qsub", "-terse", "-t", f"{job.start + 1}-{job.last + 1}",
                *(["-tc", str(job.throttle)] if job.throttle else []),
                "-N", name if not name[0].isdigit() else f"j{name}", "-wd", self.run_dir,
                "-o", "/dev/null", "-e", "/dev/null", *_resource_args(resources), *resources.extra]
        out_prefix, _, out_suffix = job.stdout_pattern.rpartition(self.index_placeholder)
        err_prefix, _, err_suffix = job.stderr_pattern.rpartition(self.index_placeholder)
        return [*argv, "-b", "y", "-shell", "no", "/bin/bash", "-c", LAUNCHER, "clustrix-element",
                out_prefix, out_suffix, err_prefix, err_suffix, script_path]

    def parse_job_id(self, stdout: str, job: ArraySubmission) -> str:
        job_id = stdout.strip().split(".")[0]  # -terse prints "JOB.FIRST-LAST:STEP" for an array
        if not job_id.isdigit():
            raise ValueError(f"qsub printed no job id: {stdout!r}")
        return job_id

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["qstat", "-xml"]  # every job of this user; Grid Engine's qstat takes no list of job ids

    def parse_status(self, stdout: str, job_ids: Sequence[str]) -> StatusReport:
        entries = []
        for job in ET.fromstring(stdout).iter("job_list"):
            number, state, tasks = (job.findtext(tag, "").strip() for tag in ("JB_job_number", "state", "tasks"))
            if number and tasks:
                entries += [((number, task - 1), state, _phase(state)) for task in expand_ranges(tasks)]
        return report(entries)

    def final_argv(self, job_id: str) -> list[str]:
        return ["qacct", "-j", job_id]

    def parse_final(self, stdout: str, job_id: str) -> dict[ElementKey, FinalState]:
        states = {}
        for record in re.split(r"^=+$", stdout, flags=re.MULTILINE):
            fields = dict(re.findall(r"^(\w+)\s+(.*?)\s*$", record, re.MULTILINE))
            if fields.get("jobnumber", "").isdigit() and fields.get("taskid", "").isdigit():
                states[(fields["jobnumber"], int(fields["taskid"]) - 1)] = _final(fields)
        return states

    def cancel_argv(self, elements: Sequence[ElementKey]) -> list[str]:
        argv = ["qdel"]
        for job, indices in _by_job(elements).items():
            for low, high in _runs(indices):
                argv += [job, "-t", f"{low + 1}-{high + 1}"]
        return argv


def _queue_configs(stdout: str) -> list[dict[str, str]]:
    """The batch queues of ``qconf -sq``'s output (a block from each ``qname`` line), each as its parameters'
    values by name, a value continued on the next line (``\\`` at the end) joined."""
    text = re.sub(r"\\\n\s*", "", stdout)
    queues = [dict(re.findall(r"^(\w+)[ \t]+(.*?)\s*$", block, re.MULTILINE))
              for block in re.split(r"^(?=qname\s)", text, flags=re.MULTILINE)]
    return [queue for queue in queues if "qname" in queue and "BATCH" in queue.get("qtype", "BATCH").split()]


def _instance_values(queue: Mapping[str, str], name: str) -> list[str]:
    """The values of the parameter ``name`` the queue's instances apply: from ``DEFAULT,[HOST=VALUE],...`` each
    host's (or host group's) own, and the default unless every entry of the queue's hostlist has its own."""
    text = queue.get(name, "")
    default = re.split(r"\s*,\s*\[", text)[0].strip()
    own = dict(re.findall(r"\[\s*([^=\]\s]+)\s*=\s*([^\]]*?)\s*\]", text))
    hosts = queue.get("hostlist", "").replace(",", " ").split()
    shared = not hosts or any(host not in own for host in hosts)
    return [*own.values(), *([default] if default and shared else [])]


def _largest(queues: Sequence[Mapping[str, str]], name: str, convert: Callable[[str], int]) -> Optional[int]:
    """The largest value of the limit ``name`` in ``queues``, converted; None where a queue instance has no limit
    (``INFINITY``), none is set, or one cannot be read."""
    values = [value for queue in queues for value in _instance_values(queue, name)]
    if not values or any(value.upper() == "INFINITY" for value in values):
        return None
    try:
        return max(map(convert, values))
    except ValueError:
        return None


def _runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted indices to runs of consecutive ones: ``[0, 1, 2, 5]`` to ``[(0, 2), (5, 5)]``."""
    runs: list[tuple[int, int]] = []
    for index in sorted(set(indices)):
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def _by_job(elements: Sequence[ElementKey]) -> dict[str, list[int]]:
    """Element keys grouped by job, in job order."""
    jobs: dict[str, list[int]] = {}
    for job, index in sorted(elements):
        jobs.setdefault(job, []).append(index)
    return jobs


def _resource_args(resources: Resources) -> list[str]:
    args: list[str] = []
    slots = 1
    if resources.get("pe") and resources.get("cpus"):
        slots = int(resources.get("cpus"))
        args += ["-pe", str(resources.get("pe")), str(slots)]
    if resources.megabytes is not None:
        args += ["-l", f"h_vmem={math.ceil(resources.megabytes / slots)}M"]
    if resources.seconds is not None:
        args += ["-l", f"h_rt={resources.seconds}"]
    if resources.get("gpus") is not None:
        args += ["-l", f"gpu={resources.get('gpus')}"]
    return args + resources.flags({"partition": "-q", "account": "-A"})
