"""PBS, in two flavours (option ``flavor``): ``pbspro`` (PBS Professional, OpenPBS) and ``torque``.

Arrays: PBS Pro ``qsub -J START-LAST`` (subjobs see ``PBS_ARRAY_INDEX``; throttle ``-W max_run_subjobs=N``;
``-r y`` because sites that default to non-rerunnable jobs refuse arrays otherwise), Torque
``qsub -t START-LAST[%N]`` (``PBS_ARRAYID``). PBS Pro refuses an array of one subjob, so a one-element
submission (also a resubmitted element) is an ordinary job that names its element in
``CLUSTRIX_ARRAY_INDEX`` (``-v``), in both flavours. Log paths: PBS Pro replaces ``^array_index^`` in
``-o``/``-e``; Torque documents no index placeholder there, so its paths name ``$PBS_ARRAYID`` and leave it to
the server (where it is not expanded, the subjobs of an array share one log file and failures carry no log
tail).

Job ids are kept as their sequence number, with ``[]`` for an array (``1234[]``, ``1234``): ``qstat``
truncates long ids (``1234[5].serv*``), and every PBS command accepts the short form. qstat cannot show the
element a plain job runs, so the id of one running element I > 0 (a resubmitted element) carries it,
``1240:5``, in the run's records too; PBS commands get the number. An array whose ``qsub`` printed a bare
number (Debian's Torque-style wrappers over SLURM, which list each subjob under a job number of its own) is kept
as ``1234~0-7``: its elements share one phase (:func:`_opaque_entries`). Status is ONE
``qstat -u USER`` per cycle (``-t`` expands arrays into subjobs), listing the user's jobs rather than ours by
id, because PBS answers a list that names one purged job with an error for the whole call. Final states come
from ``qstat -f`` (``-x`` on PBS Pro, whose finished jobs are history) and its ``exit_status``: 0 COMPLETED;
a signal (PBS reports 256 + signal, some sites 128 + signal) TIMEOUT when the walltime used reached the
limit, else KILLED (``qdel`` sends SIGTERM, so 271); a negative status (PBS could not run the job) or another
exit status FAILED. A job reported finished with no exit status at all (a PBS command interface that does not
report one) is FAILED: its element ended and wrote no result.

Resources: PBS Pro ``-l select=NODES:ncpus=CPUS:mem=MEM:ngpus=GPUS``, Torque
``-l nodes=NODES:ppn=CPUS:gpus=GPUS`` and ``-l mem=MEM``; both ``-l walltime=HH:MM:SS``, ``-q`` (partition),
``-A`` (account).

Limits (``retry_policy``'s cap), both flavours: ``qmgr -c "list queue QUEUE"`` of the ``partition``, or else of
the server's ``default_queue``; its ``resources_max.mem``/``.walltime`` and ``resources_default.mem``/
``.walltime``. Written to, and tested on, the listings of the PBS Professional and Torque documentation only:
not verified against a live PBS server, as none runs where this package is tested (Debian's Torque-style
wrappers over SLURM have no ``qmgr``: the query fails there and the limits are empty).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
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
from clustrix_futures.schedulers.units import (
    Resources,
    clock_seconds,
    hhmmss,
    readable,
    size_megabytes,
    walltime_seconds,
)

_QUEUED_STATES = {"Q", "H", "W", "T", "S", "U", "M"}
_RUNNING_STATES = {"R", "E", "B"}
_FINISHED_STATES = {"C", "F", "X"}
_TRANSIENT = ("cannot connect to server", "Cannot connect to", "Connection refused", "Communication failure",
              "End of File", "pbs_iff")
_NAME_UNSAFE = r"[^A-Za-z0-9_.+-]"
_JOB = re.compile(r"^(\d+)(?:\[(\d*)\])?")  # 1234, 1234[], 1234[5], each maybe with .server after it
_PLACEHOLDERS = {"pbspro": "^array_index^", "torque": "$PBS_ARRAYID"}
_PLAIN = ":"  # in the id of a plain job that runs element I > 0: NUMBER:I
_OPAQUE = "~"  # in the id of an array whose subjobs qstat does not name: NUMBER~FIRST-LAST
# PBS sizes: b, kb, mb, gb, tb, pb in powers of 1024, w (a word, 8 bytes) likewise, in any case; a bare number is bytes
_MEMORY_UNITS = {"": 1, **{prefix + unit: 1024 ** power * size
                           for power, prefix in enumerate(["", "k", "m", "g", "t", "p"])
                           for unit, size in (("b", 1), ("w", 8))}}
# The limits of the server's default queue; the command fails (no limits) without qmgr, server or default queue.
_DEFAULT_QUEUE_LIMITS = ('queue=$(qmgr -c "list server" | '
                         r'sed -n "s/^[[:space:]]*default_queue = \([^[:space:]]*\).*/\1/p")'
                         ' && [ -n "$queue" ] && exec qmgr -c "list queue $queue"')


def _seconds(clock: str) -> Optional[int]:
    return walltime_seconds(clock) if re.fullmatch(r"\d+(:\d+){2}", clock) else None


def _final(fields: Mapping[str, str]) -> FinalState:
    status = fields.get("exit_status")
    if status is None or not re.fullmatch(r"-?\d+", status):
        return FinalState("FAILED", f"the job finished (state {fields.get('job_state')}) and the scheduler reports "
                                    f"no exit status")
    code = int(status)
    detail = f"exit status {code}"
    used, limit = (_seconds(fields.get(name, "")) for name in ("resources_used.walltime", "Resource_List.walltime"))
    if code > 128 or code < 0:
        if used is not None and limit is not None and used >= limit:
            return FinalState("TIMEOUT", f"{detail}, walltime {fields['resources_used.walltime']} of "
                                         f"{fields['Resource_List.walltime']}")
        if code > 128:
            signal = code - 256 if code > 256 else code - 128
            return FinalState("KILLED", f"{detail}: killed by signal {signal} (qdel, a limit, or the system)")
        return FinalState("FAILED", f"{detail}: PBS could not run the job")
    return FinalState("COMPLETED" if code == 0 else "FAILED", detail)


class PbsBackend(CommandBackend):
    name = "pbs"
    index_placeholder = "{index}"  # replaced in submit_argv by the flavour's own
    transient_markers = _TRANSIENT
    max_array_pattern = r"^set server max_(?:job_)?array_size\s*=\s*(\d+)"

    def __init__(self, context: BackendContext) -> None:
        self.flavor = context.pbs_flavor
        self._names: dict[str, str] = {}  # an opaque array's job name, by its id (not known after an attach)

    def config_argv(self) -> Optional[list[str]]:
        return ["qmgr", "-c", "print server"]

    def limits_argv(self, partition: Optional[str]) -> Optional[list[str]]:
        """None for a queue name that is not a plain word: qmgr parses its ``-c`` directive itself (``;`` would
        start another one), so only a name it cannot misread goes in."""
        if partition and not re.fullmatch(r"[\w.@-]+", partition):
            return None
        return ["qmgr", "-c", f"list queue {partition}"] if partition else ["sh", "-c", _DEFAULT_QUEUE_LIMITS]

    def parse_limits(self, stdout: str) -> Limits:
        """The first queue listed: ``resources_max`` and ``resources_default`` of ``mem`` and ``walltime``, each
        None where the queue sets none or this cannot read it."""
        block = (re.split(r"^Queue:?\s", stdout, flags=re.MULTILINE)[1:] or [""])[0]
        fields = dict(re.findall(r"^\s+(resources_\w+\.\w+) = (\S+)", block, re.MULTILINE))
        mem, seconds = (lambda value: size_megabytes(value.lower(), _MEMORY_UNITS)), clock_seconds
        return Limits(mem_mb=readable(mem, fields.get("resources_max.mem")),
                      seconds=readable(seconds, fields.get("resources_max.walltime")),
                      default_mem_mb=readable(mem, fields.get("resources_default.mem")),
                      default_seconds=readable(seconds, fields.get("resources_default.walltime")))

    def submit_argv(self, job: ArraySubmission, script_path: str) -> list[str]:
        if job.size == 1:
            array, index = ["-v", f"CLUSTRIX_ARRAY_INDEX={job.start}"], str(job.start)
        elif self.flavor == "torque":
            array = ["-t", f"{job.start}-{job.last}" + (f"%{job.throttle}" if job.throttle else "")]
            index = _PLACEHOLDERS["torque"]
        else:
            array = ["-J", f"{job.start}-{job.last}", "-r", "y",
                     *(["-W", f"max_run_subjobs={job.throttle}"] if job.throttle else [])]
            index = _PLACEHOLDERS["pbspro"]
        logs = ["-o", job.stdout_pattern.replace(self.index_placeholder, index),
                "-e", job.stderr_pattern.replace(self.index_placeholder, index)]
        resources = Resources(job.resources)
        return ["qsub", "-N", resources.name(_NAME_UNSAFE), *array, *logs,
                *_resource_args(resources, self.flavor), *resources.extra, script_path]

    def parse_job_id(self, stdout: str, job: ArraySubmission) -> str:
        found = _JOB.match(stdout.strip())
        if found is None:
            raise ValueError(f"qsub printed no job id: {stdout!r}")
        if found.group(2) is not None:
            return f"{found.group(1)}[]"
        if job.size > 1:  # qsub printed a bare number for an array: a PBS that does not name its subjobs
            job_id = f"{found.group(1)}{_OPAQUE}{job.start}-{job.last}"
            self._names[job_id] = Resources(job.resources).name(_NAME_UNSAFE)
            return job_id
        if job.size == 1 and job.start:
            return f"{found.group(1)}{_PLAIN}{job.start}"
        return found.group(1)

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        expand = ["-t"] if any("[" in job for job in job_ids) else []
        return ["sh", "-c", 'exec qstat "$@" -u "$(id -un)"', "qstat", *expand]

    def parse_status(self, stdout: str, job_ids: Sequence[str]) -> StatusReport:
        plain, entries = _plain_jobs(job_ids), []
        lines = [words for words in map(str.split, stdout.splitlines()) if len(words) >= 3]
        for words in lines:
            key = _key(words[0], plain)
            if key is not None:
                entries.append((key, words[-2], phase_of(words[-2], _QUEUED_STATES, _RUNNING_STATES)))
        for job_id in job_ids:
            if _OPAQUE in job_id:
                entries += _opaque_entries(job_id, lines, self._names.get(job_id))
        return report(entries)

    def final_argv(self, job_id: str) -> list[str]:
        history = ["-x"] if self.flavor == "pbspro" else []
        return ["qstat", *history, "-f", *(["-t"] if "[" in job_id else []), _command_id(job_id)]

    def parse_final(self, stdout: str, job_id: str) -> dict[ElementKey, FinalState]:
        if _OPAQUE in job_id:  # asked once its every line had ended; no line names an element
            first, last = _span(job_id)
            return {(job_id, index): FinalState("FAILED", "the array ended, and this PBS names neither its subjobs "
                                                          "nor their exit status") for index in range(first, last + 1)}
        plain, states = _plain_jobs([job_id]), {}
        for block in re.split(r"^Job Id:\s*", stdout, flags=re.MULTILINE)[1:]:
            key = _key(block.split()[0], plain) if block.split() else None
            fields = {name.lower() if name.lower() in ("exit_status", "job_state") else name: value
                      for name, value in re.findall(r"^\s+([\w.]+) = (.*?)\s*$", block, re.MULTILINE)}
            if key is not None and fields.get("job_state") in _FINISHED_STATES:
                states[key] = _final(fields)
        return states

    def cancel_argv(self, elements: Sequence[ElementKey]) -> list[str]:
        """Subjobs as ``1234[5]``; a job without brackets by its number, whole (the wrappers' bare array ids
        name no subjob either: their qdel takes ``1234[5]`` as ``1234``)."""
        return ["qdel", *dict.fromkeys(f"{job[:-2]}[{index}]" if job.endswith("[]") else _command_id(job)
                                       for job, index in elements)]


def _command_id(job_id: str) -> str:
    """The id PBS commands take: without the element of a plain job or the span of an opaque array."""
    return job_id.split(_PLAIN)[0].split(_OPAQUE)[0]


def _span(job_id: str) -> tuple[int, int]:
    first, last = job_id.split(_OPAQUE)[1].split("-")
    return int(first), int(last)


def _opaque_entries(job_id: str, lines: Sequence[list[str]], name: Optional[str]) -> list[tuple[ElementKey, str, str]]:
    """Every element of an array whose subjobs qstat lists under job numbers of their own (Debian's Torque
    wrappers over SLURM: no ``-t``, and the array's own number is one subjob, not element 0), in one phase:
    running while one of the user's jobs numbered from the array's on, with its name (when known), runs; else
    queued while one is queued; else ended. An element's result still ends it at once; one that dies without
    a result is known when the whole array has ended."""
    number = int(_command_id(job_id))
    states = {words[-2] for words, found in ((words, _JOB.match(words[0])) for words in lines)
              if found is not None and len(words) > 3 and int(found.group(1)) >= number
              and (name is None or name.startswith(words[3].rstrip("*")))}
    word = next((state for state in states if state in _RUNNING_STATES), None) or next(
        (state for state in states if state in _QUEUED_STATES), "C")
    phase = phase_of(word, _QUEUED_STATES, _RUNNING_STATES)
    first, last = _span(job_id)
    return [((job_id, index), word, phase) for index in range(first, last + 1)]


def _plain_jobs(job_ids: Iterable[str]) -> dict[str, ElementKey]:
    """The element keys of the plain jobs among ``job_ids`` that run an element other than 0, by job number."""
    return {job.split(_PLAIN)[0]: (job, int(job.split(_PLAIN)[1])) for job in job_ids if _PLAIN in job}


def _key(job_id: str, plain: Mapping[str, ElementKey]) -> Optional[ElementKey]:
    """A subjob or a plain job, as qstat names it, to its element; None for an array's summary line."""
    found = _JOB.match(job_id)
    if found is None or found.group(2) == "":
        return None
    if found.group(2) is None:
        return plain.get(found.group(1), (found.group(1), 0))
    return f"{found.group(1)}[]", int(found.group(2))


def _resource_args(resources: Resources, flavor: str) -> list[str]:
    nodes, cpus, gpus = (resources.get(name) for name in ("nodes", "cpus", "gpus"))
    mem = resources.megabytes
    args: list[str] = []
    if flavor == "torque":
        if nodes or cpus or gpus:
            args += ["-l", f"nodes={nodes or 1}:ppn={cpus or 1}" + (f":gpus={gpus}" if gpus else "")]
        if mem is not None:
            args += ["-l", f"mem={mem}mb"]
    elif nodes or cpus or gpus or mem is not None:
        chunk = [f"select={nodes or 1}", f"ncpus={cpus or 1}", *([f"mem={mem}mb"] if mem else []),
                 *([f"ngpus={gpus}"] if gpus else [])]
        args += ["-l", ":".join(chunk)]
    if resources.seconds is not None:
        args += ["-l", f"walltime={hhmmss(resources.seconds)}"]
    return args + resources.flags({"partition": "-q", "account": "-A"})
