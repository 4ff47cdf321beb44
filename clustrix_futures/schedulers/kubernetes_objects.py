"""The Kubernetes objects of the ``kubernetes`` scheduler (:mod:`clustrix_futures.schedulers.kubernetes`), as
pure functions: :func:`job_body`, the Indexed Job made from an array submission, and what the pods and Jobs
it lists say about their elements (:func:`pod_phase`, :func:`job_failure`, :func:`index_set`).

Objects are the ``kubernetes`` client's models (``k8s`` is its ``kubernetes.client`` module); the stand-in API
server of the tests gives the same attributes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

from clustrix_futures.config import Settings
from clustrix_futures.schedulers.base import ENDED, QUEUED, RUNNING, ArraySubmission, FinalState
from clustrix_futures.schedulers.units import expand_ranges, megabytes, walltime_seconds

RUN_LABEL = "clustrix-futures/run"
BATCH_LABEL = "clustrix-futures/batch"
START_ANNOTATION = "clustrix-futures/start"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
TTL_SECONDS = 24 * 3600
STUCK = ("ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError")


def job_body(k8s: Any, name: str, job: ArraySubmission, script: str, settings: Settings, run: str) -> Any:
    """The Job ``name`` running ``job``'s elements, each the shell script ``script``, labelled with the run."""
    resources = job.resources
    env = _environment(k8s, settings["env"] or {})
    if job.start:
        assert job.size == 1, "only single elements are submitted with an offset"
        env.append(k8s.V1EnvVar(name="CLUSTRIX_ARRAY_INDEX", value=str(job.start)))
    requests, limits = {}, {}
    if resources.get("cpus"):
        requests["cpu"] = str(resources["cpus"])
    if resources.get("mem"):
        requests["memory"] = limits["memory"] = f"{megabytes(resources['mem'])}Mi"
    if resources.get("gpus"):
        limits["nvidia.com/gpu"] = str(resources["gpus"])
    container = k8s.V1Container(name="worker", image=settings["image"], command=["/bin/sh", "-c", script],
                                env=env, resources=k8s.V1ResourceRequirements(requests=requests or None,
                                                                              limits=limits or None))
    deadline = walltime_seconds(resources["time"]) if resources.get("time") else None
    labels = {RUN_LABEL: run, BATCH_LABEL: str(job.batch)}
    pod = k8s.V1PodSpec(restart_policy="Never", containers=[container], active_deadline_seconds=deadline,
                        service_account_name=settings["service_account"])
    spec = k8s.V1JobSpec(completion_mode="Indexed", completions=job.size,
                         parallelism=min(job.throttle or job.size, job.size), backoff_limit_per_index=0,
                         ttl_seconds_after_finished=TTL_SECONDS,
                         template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod))
    return k8s.V1Job(api_version="batch/v1", kind="Job", spec=spec, metadata=k8s.V1ObjectMeta(
        name=name, labels=labels, annotations={START_ANNOTATION: str(job.start)}))


def _environment(k8s: Any, env: Mapping[str, Any]) -> list[Any]:
    """The ``env`` option's variables: values, or ``{secret, key}`` references to a Secret's key."""
    return [k8s.V1EnvVar(name=key, value=value) if isinstance(value, str) else k8s.V1EnvVar(
        name=key, value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(
            name=value["secret"], key=value["key"])))
        for key, value in sorted(env.items())]


def job_failure(job: Any) -> Optional[FinalState]:
    """The state of a Job that failed as a whole (its ``Failed`` condition), None for one that did not."""
    status = job.status
    if not status:
        return None
    return next((FinalState(c.reason or "FAILED", c.message or "") for c in (status.conditions or [])
                 if c.type == "Failed" and c.status == "True"), None)


def pod_phase(pod: Any) -> tuple[str, str, FinalState]:
    """A pod's (phase, state word, final state if it ended)."""
    status = pod.status
    phase = (status.phase if status else None) or "Pending"
    containers = (status.container_statuses or []) if status else []
    if phase == "Pending":
        waiting = next((c.state.waiting for c in containers if c.state and c.state.waiting), None)
        if waiting is not None and waiting.reason in STUCK:
            return ENDED, waiting.reason, FinalState(waiting.reason, waiting.message or "")
        return QUEUED, phase, FinalState("PENDING")
    if phase == "Succeeded":
        return ENDED, phase, FinalState("COMPLETED")
    if phase == "Failed":
        return ENDED, phase, _failure(pod)
    return RUNNING, phase, FinalState("RUNNING")  # Running, or Unknown (node lost: Kubernetes decides)


def _failure(pod: Any) -> FinalState:
    status = pod.status
    disruption = next((c for c in (status.conditions or []) if c.type == "DisruptionTarget" and c.status == "True"),
                      None)
    if disruption is not None:
        return FinalState("PREEMPTED", f"{disruption.reason}: {disruption.message or ''}".strip())
    if status.reason in ("DeadlineExceeded", "Evicted"):
        return FinalState(status.reason, status.message or "")
    terminated = next((c.state.terminated for c in (status.container_statuses or [])
                       if c.state and c.state.terminated), None)
    if terminated is None:
        return FinalState("FAILED", status.message or status.reason or "")
    if terminated.reason == "OOMKilled":
        return FinalState("OOMKilled", f"exit code {terminated.exit_code}")
    return FinalState("FAILED", f"exit code {terminated.exit_code}" + (
        f", {terminated.reason}" if terminated.reason not in (None, "Error") else ""))


def index_set(ranges: Optional[str]) -> set[int]:
    """A Job status's ``completedIndexes`` or ``failedIndexes`` (``1,3-5``) as a set."""
    return set(expand_ranges(ranges)) if ranges else set()


def created(pod: Any) -> Any:
    """When the pod was made (to tell an element's latest pod)."""
    return pod.metadata.creation_timestamp or ""


def describe(exc: BaseException) -> str:
    """An API error in the server's words (its Status message), else the exception."""
    body = getattr(exc, "body", None)
    if body:
        try:
            return f"{exc.status} {json.loads(body).get('message', body)}"  # type: ignore[attr-defined]
        except (ValueError, AttributeError):
            return f"{getattr(exc, 'status', '')} {body}"
    return str(exc) or type(exc).__name__
