"""SLURM: ``sbatch --array``, one ``squeue`` per cycle for all jobs, ``scontrol``/``sacct`` for final states.

``gpus=N`` is ``--gpus=N``; a typed ``gpus="TYPE:N"`` is ``--gres=gpu:TYPE:N`` (a type the cluster lacks makes
sbatch refuse the job: its tasks fail with ``SUBMIT_FAILED``, quoting sbatch).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

from clustrix_futures.schedulers.base import ArraySubmission, ElementKey, FinalState, Limits, StatusReport
from clustrix_futures.schedulers.command import CommandBackend, phase_of, report
from clustrix_futures.schedulers.units import Resources, expand_ranges, megabytes, walltime_seconds

_RESOURCE_FLAGS = {
    "cpus": "--cpus-per-task",
    "mem": "--mem",
    "time": "--time",
    "partition": "--partition",
    "account": "--account",
    "gpus": "--gpus",
    "nodes": "--nodes",
    "job_name": "--job-name",
}
_QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED",
                  "SPECIAL_EXIT"}
_RUNNING_STATES = {"RUNNING", "CONFIGURING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
_TRANSIENT = ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
              "Zero Bytes were transmitted", "Communication connection failure", "slurm_receive_msg")
_ELEMENT = re.compile(r"^(\d+)_(\d+|\[[^\]]*\])$")


class SlurmBackend(CommandBackend):
    name = "slurm"
    index_placeholder = "%a"
    transient_markers = _TRANSIENT
    max_array_pattern = r"^MaxArraySize\s*=\s*(\d+)"

    def __init__(self, requeue: bool = True, warning_seconds: Optional[int] = None) -> None:
        self.requeue = requeue  # False: --no-requeue (the monitor runs preempted and node-failed elements again)
        self.warning_seconds = warning_seconds  # --signal=B:USR1@N: the job's shell (the worker) gets it

    def config_argv(self) -> Optional[list[str]]:
        return ["scontrol", "show", "config"]

    def limits_argv(self, partition: Optional[str]) -> Optional[list[str]]:
        return ["scontrol", "--oneliner", "show", "partition", *([partition] if partition else [])]

    def parse_limits(self, stdout: str) -> Limits:
        """The partition named, or else the default one: ``MaxMemPerNode`` (else the memory of its nodes, from
        ``TRES`` over ``TotalNodes``), ``MaxTime``, ``DefMemPerNode``, ``DefMemPerCPU`` and ``DefaultTime``."""
        lines = stdout.strip().splitlines()
        line = next((text for text in lines if " Default=YES " in f" {text} "), lines[0] if lines else "")
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        tres = dict(re.findall(r"(\w+)=(\w+)", fields.get("TRES", "")))
        nodes = int(fields["TotalNodes"]) if fields.get("TotalNodes", "").isdigit() else 1
        whole = megabytes(tres["mem"]) // max(nodes, 1) if "mem" in tres else None
        return Limits(mem_mb=_size(fields.get("MaxMemPerNode")) or whole, seconds=_time(fields.get("MaxTime")),
                      default_mem_mb=_size(fields.get("DefMemPerNode")),
                      default_mem_per_cpu_mb=_size(fields.get("DefMemPerCPU")),
                      default_seconds=_time(fields.get("DefaultTime")))

    def submit_argv(self, job: ArraySubmission, script_path: str) -> list[str]:
        span = ",".join(map(str, job.indices)) if job.indices else f"{job.start}-{job.last}"
        array = span + (f"%{job.throttle}" if job.throttle else "")
        argv = ["sbatch", "--parsable", f"--array={array}", f"--output={job.stdout_pattern}",
                f"--error={job.stderr_pattern}", "--open-mode=append", *([] if self.requeue else ["--no-requeue"]),
                *([f"--signal=B:USR1@{self.warning_seconds}"] if self.warning_seconds else [])]
        for option, flag in _RESOURCE_FLAGS.items():
            value = job.resources.get(option)
            if option == "gpus" and isinstance(value, str):  # a type: TYPE:COUNT
                argv.append(f"--gres=gpu:{value}")
            elif value is not None:
                argv.append(f"{flag}={value}")
        return [*argv, *Resources(job.resources).extra, script_path]

    def parse_job_id(self, stdout: str, job: ArraySubmission) -> str:
        job_id = stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise ValueError(f"sbatch printed no job id: {stdout!r}")
        return job_id

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["squeue", "--noheader", "--array", f"--jobs={','.join(job_ids)}", "--format=%i %T"]

    def parse_status(self, stdout: str, job_ids: Sequence[str]) -> StatusReport:
        entries = []
        for line in stdout.splitlines():
            words = line.split()
            found = _ELEMENT.match(words[0]) if len(words) == 2 else None
            if found is not None:
                phase = phase_of(words[1], _QUEUED_STATES, _RUNNING_STATES)
                entries += [((found.group(1), index), words[1], phase) for index in expand_ranges(found.group(2))]
        return report(entries)

    def final_argv(self, job_id: str) -> list[str]:
        return ["scontrol", "--oneliner", "show", "job", job_id]

    def parse_final(self, stdout: str, job_id: str) -> dict[ElementKey, FinalState]:
        states = {}
        for line in stdout.splitlines():
            fields = dict(re.findall(r"\b(ArrayJobId|ArrayTaskId|JobState|Reason|ExitCode)=(\S+)", line))
            if fields.get("ArrayTaskId", "").isdigit() and "JobState" in fields:
                detail = f"reason {fields.get('Reason', '?')}, exit code {fields.get('ExitCode', '?')}"
                states[(fields["ArrayJobId"], int(fields["ArrayTaskId"]))] = FinalState(fields["JobState"], detail)
        return states

    def accounting_argv(self, job_id: str) -> Optional[list[str]]:
        return ["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={job_id}",
                "--format=JobID,State,ExitCode"]

    def parse_accounting(self, stdout: str) -> dict[ElementKey, FinalState]:
        states = {}
        for line in stdout.splitlines():
            job, _, rest = line.partition("|")
            state, _, exit_code = rest.partition("|")
            found = _ELEMENT.match(job)
            if found and found.group(2).isdigit() and state:
                states[(found.group(1), int(found.group(2)))] = FinalState(state.split()[0],
                                                                           f"exit code {exit_code}")
        return states

    def cancel_argv(self, elements: Sequence[ElementKey]) -> list[str]:
        return ["scancel", *(f"{job}_{index}" for job, index in elements)]


def _size(value: Optional[str]) -> Optional[int]:
    return megabytes(value) if value and value[0].isdigit() else None


def _time(value: Optional[str]) -> Optional[int]:
    return walltime_seconds(value) if value and value[0].isdigit() else None
