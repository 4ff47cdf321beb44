"""Kubernetes: one Indexed Job per batch, through the ``kubernetes`` Python client (``pip install
'clustrix-futures[kubernetes]'``). An API scheduler: it implements
:class:`~clustrix_futures.schedulers.base.Scheduler` itself, since there are no commands to build.

* A batch of N elements is a Job with ``completionMode: Indexed``, ``completions: N``, ``parallelism:
  max_workers`` (the throttle) and ``backoffLimitPerIndex: 0`` (an element runs once; ``retries`` and
  ``retry_states`` decide reruns, as on every backend). Its one container runs the job script with
  ``/bin/sh -c``; the worker reads its element from ``JOB_COMPLETION_INDEX``. An element run again is a
  one-element Job of its own with ``CLUSTRIX_ARRAY_INDEX`` set. Options: ``image``, ``namespace``, ``cpus``
  (CPU request), ``mem`` (memory request and limit), ``gpus`` (``nvidia.com/gpu`` limit), ``time`` (the pod's
  ``activeDeadlineSeconds``), ``service_account``, ``env`` (values, or ``{secret, key}`` references).
  Payloads and results travel through S3 storage, which this backend requires.
* Status: per monitor cycle, ONE list of the run's Jobs and ONE list of its pods, both by the label
  ``clustrix-futures/run`` (two calls whatever the number of tasks, elements or Jobs). An index with a
  running pod is running; without a pod, it is queued while its Job lives. Final states come from those
  same lists, never from further calls: ``COMPLETED``; ``FAILED`` (with the exit code); ``OOMKilled``;
  ``DeadlineExceeded`` (``time``); ``Evicted``; ``PREEMPTED`` (a pod with a ``DisruptionTarget`` condition,
  so the default ``retry_states`` apply); ``ImagePullBackOff``, ``InvalidImageName``,
  ``CreateContainerConfigError`` (for these a pod would wait forever: the Job is deleted, and every element
  it had not finished ends so); ``CANCELLED`` (the Job was deleted by someone else).
* Cancel: a Job whose every unfinished element is cancelled is deleted (background propagation); single
  elements of a Job that goes on cannot be withdrawn from it, so their tasks get skip markers instead.
* The log tail of a failed element is the end of its pod's log. A Job is deleted once the monitor is done
  with all its elements, unless one failed (kept for its pods' logs, like the run's files); what is left is
  deleted with the run's files, else by Kubernetes one day after it finished (``ttlSecondsAfterFinished``).

Verified only against the stand-in API server in ``tests/support/k8s_standin.py``, which runs each pod's command
as a local process: no real cluster has run this code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import posixpath
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any, Optional

from clustrix_futures.config import Settings
from clustrix_futures.errors import ConfigError
from clustrix_futures.schedulers.base import (
    ENDED,
    QUEUED,
    RUNNING,
    ArraySubmission,
    BackendContext,
    ElementKey,
    FinalState,
    Limits,
    StatusReport,
    SubmitRefused,
)
from clustrix_futures.schedulers.kubernetes_objects import (
    INDEX_ANNOTATION,
    JOB_NAME_LABELS,
    RUN_LABEL,
    START_ANNOTATION,
    STUCK,
    created,
    describe,
    index_set,
    job_body,
    job_failure,
    pod_phase,
)

log = logging.getLogger(__name__)

MAX_COMPLETIONS = 100_000  # the API's limit for an Indexed Job
TRANSIENT_STATUS = (0, 408, 429, 500, 502, 503, 504)
SUBMIT_ATTEMPTS = 3
_IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _client() -> Any:
    try:
        import kubernetes
    except ImportError as exc:
        raise ConfigError("the kubernetes backend needs the kubernetes client: pip install "
                          "'clustrix-futures[kubernetes]'") from exc
    return kubernetes


class KubernetesScheduler:
    """The :class:`~clustrix_futures.schedulers.base.Scheduler` of one run on Kubernetes (see the module
    docstring). What it learnt of the run's Jobs lives here, rebuilt from the listings on attach."""

    name = "kubernetes"
    index_placeholder = "%a"  # unused: pods' logs are read through the API

    def __init__(self, settings: Settings, context: BackendContext) -> None:
        kubernetes = _client()
        self.k8s = kubernetes.client
        if not settings["image"]:
            version = "{}.{}".format(*sys.version_info[:2])
            raise ConfigError(f"the kubernetes backend needs the option 'image': a container image with Python "
                              f"{version}, cloudpickle, boto3 and clustrix-futures")
        self.settings = settings
        api, context_namespace = self._connect(kubernetes, settings["kubeconfig"])
        self.namespace = settings["namespace"] or context_namespace or "default"
        self.batch_api, self.core_api = kubernetes.client.BatchV1Api(api), kubernetes.client.CoreV1Api(api)
        self.run = posixpath.basename(context.run_dir.rstrip("/"))
        self.prefix = re.sub(r"[^a-z0-9-]+", "-", str(settings["job_name"]).lower()).strip("-")[:20] or "clustrix"
        self.selector = f"{RUN_LABEL}={self.run}"
        self.commands: dict[str, int] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="clustrix-k8s")
        self._jobs: dict[str, tuple[int, int]] = {}  # job name -> (first element, element count)
        self._named: set[str] = set()  # the batches' first Job names, taken
        self._finals: dict[ElementKey, FinalState] = {}
        self._pods: dict[ElementKey, str] = {}  # the latest pod of each element
        self._unfinished: dict[str, set[int]] = {}  # per job, as of the last status

    @staticmethod
    def _connect(kubernetes: Any, kubeconfig: Optional[str]) -> tuple[Any, Optional[str]]:
        """An API client (its own configuration, not the client library's global one) and the namespace the
        configuration names, if any."""
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = kubernetes.client.Configuration()
                kubernetes.config.load_incluster_config(client_configuration=configuration)
                with open(_IN_CLUSTER_NAMESPACE) as source:
                    return kubernetes.client.ApiClient(configuration), source.read().strip()
            api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
            _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
            return api, (active or {}).get("context", {}).get("namespace")
        except (kubernetes.config.ConfigException, OSError) as exc:
            where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
            raise ConfigError(f"cannot load the Kubernetes configuration ({where}): {exc}; set the option "
                              f"'kubeconfig'") from exc

    async def _api(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.commands[function.__name__] = self.commands.get(function.__name__, 0) + 1
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: function(*args, **kwargs))

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self.k8s.exceptions.ApiException):
            return exc.status in TRANSIENT_STATUS
        return isinstance(exc, OSError) or type(exc).__module__.startswith("urllib3")

    # ------------------------------------------------------------ the Scheduler protocol

    async def limits(self, partition: Optional[str]) -> Limits:
        return Limits()  # a namespace's quotas are not read: right-sizing grows without a cap here

    async def max_array_size(self) -> Optional[int]:
        try:
            await self._api(self.batch_api.list_namespaced_job, self.namespace, label_selector=self.selector,
                            limit=1)
        except Exception as exc:
            raise ConfigError(f"cannot list Jobs in the Kubernetes namespace {self.namespace!r} at "
                              f"{self.batch_api.api_client.configuration.host}: {describe(exc)}") from exc
        return MAX_COMPLETIONS

    async def submit(self, job: ArraySubmission, script: str) -> str:
        name = f"{self.prefix}-{self.run}-{job.batch}"
        if name in self._named:  # an element run again: a Job of its own
            name += f"-{job.start}-{secrets.token_hex(2)}"
        body, retried = job_body(self.k8s, name, job, script, self.settings, self.run), False
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                await self._api(self.batch_api.create_namespaced_job, self.namespace, body)
                break
            except Exception as exc:
                if getattr(exc, "status", None) == 409:
                    if retried:  # our earlier attempt did create it
                        break
                    name = f"{self.prefix}-{self.run}-{job.batch}-{job.start}-{secrets.token_hex(2)}"
                    body.metadata.name = name  # the name was taken (a run attached to): another one
                    continue
                retried = self._transient(exc)
                if attempt + 1 == SUBMIT_ATTEMPTS or not retried:
                    raise SubmitRefused(f"creating Job {name} failed: {describe(exc)}") from exc
                await asyncio.sleep(1.0 + attempt)
        self._named.add(f"{self.prefix}-{self.run}-{job.batch}")
        self._jobs[name] = (job.start, job.size)
        self._unfinished[name] = set(range(job.start, job.start + job.size))
        return name

    async def status(self, job_ids: Sequence[str]) -> Optional[StatusReport]:
        known = set(self._jobs)  # a Job created while the listing is under way is in neither job_ids nor it
        try:
            jobs, pods = await asyncio.gather(
                self._api(self.batch_api.list_namespaced_job, self.namespace, label_selector=self.selector),
                self._api(self.core_api.list_namespaced_pod, self.namespace, label_selector=self.selector))
        except Exception as exc:
            if not self._transient(exc):
                raise
            log.warning("listing Jobs and pods failed, will retry: %s", describe(exc))
            return None
        watched = set(job_ids)  # with Jobs adopted on attach
        for name in known - watched:  # the monitor is done with it: its pods would fill listings
            await self._retire(name)
        listed = [job for job in jobs.items if job.metadata.name in watched]
        for name in (known & watched) - {job.metadata.name for job in listed}:
            self._deleted_elsewhere(name)
        for job in listed:  # (Jobs adopted on attach are learnt here)
            start = int((job.metadata.annotations or {}).get(START_ANNOTATION, "0"))
            self._jobs[job.metadata.name] = (start, job.spec.completions)
        latest = self._latest_pods(pods.items)
        report = StatusReport()
        for job in listed:
            name = job.metadata.name
            stuck = self._read_job(job, latest, report)
            if stuck is not None and not any(report.phases[(name, i)] == RUNNING for i in self._unfinished[name]):
                await self._delete_stuck(name, stuck, report)
        return report

    async def _retire(self, name: str) -> None:
        """The monitor is done with the Job: delete it unless an element failed (kept for its pods' logs). A
        status query running beside this one (the monitor's cancellation cycle) may have retired it already."""
        if name not in self._jobs:
            return
        indices = self._indices(name)
        self._forget(name)  # before the await: the other query must not retire it too
        if all(self._finals.get((name, i), FinalState("COMPLETED")).state == "COMPLETED" for i in indices):
            await self._delete(name)
        for index in indices:
            self._finals.pop((name, index), None)
            self._pods.pop((name, index), None)

    def _deleted_elsewhere(self, name: str) -> None:
        """The Job is gone from the listing (deleted by someone else): its unfinished elements end CANCELLED."""
        for index in self._unfinished.get(name, set()):
            self._finals.setdefault((name, index), FinalState("CANCELLED", f"the Job {name} was deleted"))
        self._forget(name)

    def _latest_pods(self, pods: Sequence[Any]) -> dict[ElementKey, Any]:
        """The latest pod of each element of the known Jobs."""
        latest: dict[ElementKey, Any] = {}
        for pod in pods:
            key = self._element_of(pod)
            if key is not None and (key not in latest or created(pod) >= created(latest[key])):
                latest[key] = pod
        return latest

    def _indices(self, name: str) -> range:
        start, size = self._jobs[name]
        return range(start, start + size)

    def _forget(self, name: str) -> None:
        self._jobs.pop(name, None)
        self._unfinished.pop(name, None)

    def _element_of(self, pod: Any) -> Optional[ElementKey]:
        labels, annotations = pod.metadata.labels or {}, pod.metadata.annotations or {}
        job = next((labels[label] for label in JOB_NAME_LABELS if label in labels), None)
        index = annotations.get(INDEX_ANNOTATION, labels.get(INDEX_ANNOTATION, ""))
        if job is None or job not in self._jobs or not str(index).isdigit():
            return None
        return job, self._jobs[job][0] + int(index)

    def _read_job(self, job: Any, pods: dict[ElementKey, Any], report: StatusReport) -> Optional[FinalState]:
        """Put one Job's elements in the report; the state of a pod that cannot start, if one is stuck."""
        name, status = job.metadata.name, job.status
        start = self._jobs[name][0]
        completed = index_set(status.completed_indexes if status else None)
        failed = index_set(getattr(status, "failed_indexes", None) if status else None)
        failure = job_failure(job)
        unfinished, stuck = set(), None
        for offset in range(job.spec.completions):
            key = (name, start + offset)
            pod = pods.get(key)
            if pod is not None:
                self._pods[key] = pod.metadata.name
                phase, word, final = pod_phase(pod)
                stuck = stuck or (final if phase == ENDED and final.state in STUCK else None)
            elif offset in completed:
                phase, word, final = ENDED, "Succeeded", FinalState("COMPLETED")
            elif offset in failed:
                phase, word, final = ENDED, "Failed", FinalState("FAILED", "the index failed; its pod is gone")
            elif failure is not None:
                phase, word, final = ENDED, "Failed", failure
            else:
                phase, word, final = QUEUED, "Pending", FinalState("PENDING")
            report.phases[key], report.states[key] = phase, word
            if phase == ENDED:
                self._finals[key] = final
            else:
                unfinished.add(key[1])
        self._unfinished[name] = unfinished
        return stuck

    async def _delete_stuck(self, name: str, stuck: FinalState, report: StatusReport) -> None:
        """A pod of this Job cannot start (its image, or a missing secret) and none runs: delete the Job, and
        end its unfinished elements in that state."""
        log.error("Job %s cannot start its pods (%s: %s); deleting it", name, stuck.state, stuck.detail)
        await self._delete(name)
        for index in self._unfinished[name]:
            self._finals[(name, index)] = stuck
            report.phases[(name, index)] = ENDED
        self._forget(name)

    async def final(self, job_id: str) -> Optional[dict[ElementKey, FinalState]]:
        return {key: state for key, state in self._finals.items() if key[0] == job_id}

    async def cancel(self, elements: Sequence[ElementKey]) -> set[ElementKey]:
        wanted: dict[str, set[int]] = {}
        for job, index in elements:
            wanted.setdefault(job, set()).add(index)
        running_anyway: set[ElementKey] = set()
        for job, indices in wanted.items():
            if self._unfinished.get(job, set()) <= indices and await self._delete(job):
                for index in self._unfinished.get(job, set()):
                    self._finals.setdefault((job, index), FinalState("CANCELLED"))
                self._forget(job)
            else:
                running_anyway.update((job, index) for index in indices)
        return running_anyway

    async def _delete(self, name: str) -> bool:
        """Delete a Job; False if that failed (it may still run)."""
        try:
            await self._api(self.batch_api.delete_namespaced_job, name, self.namespace,
                            propagation_policy="Background")
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                log.warning("could not delete Job %s: %s", name, describe(exc))
                return False
        return True

    async def log_tail(self, key: ElementKey, batch: int, size: int) -> bytes:
        pod = self._pods.get(key)
        if pod is None:
            return b""
        try:
            text = await self._api(self.core_api.read_namespaced_pod_log, pod, self.namespace, tail_lines=100)
        except Exception as exc:
            log.debug("no log for pod %s: %s", pod, describe(exc))
            return b""
        return str(text).encode()[-size:]

    async def close(self, remove: bool) -> None:
        try:
            if remove:
                await self._api(self.batch_api.delete_collection_namespaced_job, self.namespace,
                                label_selector=self.selector, propagation_policy="Background")
        except Exception as exc:
            log.warning("could not delete the run's Jobs: %s", describe(exc))
        finally:
            self._pool.shutdown(wait=False)
