"""SLURM: ``sbatch --array``, one ``squeue`` per cycle for all jobs, ``scontrol``/``sacct`` for final states."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

from clustrix_futures.backends.base import (
    ENDED,
    QUEUED,
    RUNNING,
    ArraySubmission,
    ElementKey,
    FinalState,
    StatusReport,
)

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


def phase_of(state: str) -> str:
    if state in _QUEUED_STATES:
        return QUEUED
    if state in _RUNNING_STATES:
        return RUNNING
    return ENDED


def _indices(spec: str) -> list[int]:
    """``3`` or ``[1-3,7%2]`` (squeue's compressed form) to a list of indices."""
    if spec.isdigit():
        return [int(spec)]
    indices: list[int] = []
    for part in spec.strip("[]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        indices.extend(range(int(low), int(high or low) + 1))
    return indices


class SlurmBackend:
    name = "slurm"
    index_placeholder = "%a"

    def config_argv(self) -> Optional[list[str]]:
        return ["scontrol", "show", "config"]

    def parse_max_array_size(self, stdout: str) -> Optional[int]:
        found = re.search(r"^MaxArraySize\s*=\s*(\d+)", stdout, re.MULTILINE)
        return int(found.group(1)) if found else None

    def submit_argv(self, job: ArraySubmission, script_path: str) -> list[str]:
        array = f"0-{job.size - 1}" + (f"%{job.throttle}" if job.throttle else "")
        argv = ["sbatch", "--parsable", f"--array={array}", f"--output={job.stdout_pattern}",
                f"--error={job.stderr_pattern}", "--open-mode=append"]
        for option, flag in _RESOURCE_FLAGS.items():
            if job.resources.get(option) is not None:
                argv.append(f"{flag}={job.resources[option]}")
        argv += job.resources.get("scheduler_args") or []
        return [*argv, script_path]

    def parse_job_id(self, stdout: str) -> str:
        job_id = stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise ValueError(f"sbatch printed no job id: {stdout!r}")
        return job_id

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["squeue", "--noheader", "--array", f"--jobs={','.join(job_ids)}", "--format=%i %T"]

    def parse_status(self, stdout: str) -> StatusReport:
        report = StatusReport()
        for line in stdout.splitlines():
            words = line.split()
            found = _ELEMENT.match(words[0]) if len(words) == 2 else None
            if found is None:
                continue
            for index in _indices(found.group(2)):
                key = (found.group(1), index)
                report.states[key] = words[1]
                report.phases[key] = phase_of(words[1])
        return report

    def final_argv(self, job_id: str) -> list[str]:
        return ["scontrol", "--oneliner", "show", "job", job_id]

    def parse_final(self, stdout: str) -> dict[ElementKey, FinalState]:
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

    def is_transient_error(self, stderr: str) -> bool:
        return any(marker in stderr for marker in _TRANSIENT)
