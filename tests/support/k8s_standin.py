"""A stand-in for a Kubernetes API server: batch/v1 Jobs, core/v1 Pods (with logs) and Secrets, speaking the
REST JSON the ``kubernetes`` Python client sends and expects, with a Job controller that REALLY runs each
pod's command as a local process.

No kube-apiserver can run on the machines this project is tested on (see tests/infra/README.md), so
the kubernetes backend is verified against this, and only this. What it does, as the real thing does:

* Indexed Jobs: ``completions``, ``parallelism`` (at most that many pods at once), ``backoffLimitPerIndex``
  (else ``backoffLimit``), ``completedIndexes``/``failedIndexes``, ``Complete``/``Failed`` conditions,
  ``ttlSecondsAfterFinished``; one pod per index attempt, labelled ``batch.kubernetes.io/job-name`` and
  annotated ``batch.kubernetes.io/job-completion-index``, with ``JOB_COMPLETION_INDEX`` from that annotation.
* Pods: the container's ``command`` runs with ONLY the pod's environment (its ``env``, values and
  ``secretKeyRef``s resolved from stored Secrets, plus ``PATH``, ``HOME`` and ``HOSTNAME``), in a directory
  of its own; stdout and stderr are its log. Pending, Running, Succeeded, Failed; ``OOMKilled`` (exit 137)
  when the process tree's resident memory passes the container's memory limit; ``DeadlineExceeded`` past
  ``activeDeadlineSeconds``; ``ErrImagePull`` then ``ImagePullBackOff`` for an image matching
  ``--unpullable``; ``CreateContainerConfigError`` for a missing Secret or key.
* One node with ``--cpus`` CPUs: a pod whose CPU request does not fit stays Pending (``Unschedulable``).
* Deletion: ``propagationPolicy`` Background (the Job goes at once, its pods are terminated: SIGTERM, then
  SIGKILL after their grace period) or Orphan; collections by ``labelSelector``.
* Bearer-token authentication; errors as ``Status`` objects (404 NotFound, 409 AlreadyExists, 422 Invalid).

Not simulated: several nodes, resource quotas, watches, field selectors, images (every pullable image
"is" this machine). For fault tests, ``POST /standin/faults`` with ``{"status": 503, "count": N, "match": "pods"}``
makes the next N requests whose path contains ``match`` fail with that status.

Run: ``python tests/support/k8s_standin.py --token TOKEN [--port 0] [--state DIR]``; it prints its port on the first
line of stdout, serves until SIGTERM, then kills every pod it started.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

TICK = 0.05
PULL_BACKOFF_AFTER = 1.0
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def quantity_bytes(text: str) -> int:
    found = re.fullmatch(r"(\d+)([KMG]i?)?", str(text))
    if not found:
        raise ValueError(f"unsupported quantity {text!r}")
    return int(found.group(1)) * UNITS[found.group(2) or ""]


def ranges(indices: set[int]) -> Optional[str]:
    """{0, 1, 2, 5} -> "0-2,5" (the API's form of completedIndexes)."""
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and runs[-1][1] == index - 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs) or None


def cpu_request(container: dict[str, Any]) -> float:
    text = str((container.get("resources") or {}).get("requests", {}).get("cpu", "0"))
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def selects(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.reason, "code": self.code}


class Pod:
    """One pod: its API object and, once started, its process."""

    def __init__(self, cluster: Cluster, job: dict[str, Any], index: int) -> None:
        meta, template = job["metadata"], job["spec"]["template"]
        self.namespace, self.job_name, self.index = meta["namespace"], meta["name"], index
        self.name = f"{self.job_name}-{index}-{secrets.token_hex(3)}"[:63]
        spec = json.loads(json.dumps(template.get("spec", {})))
        container = spec["containers"][0]
        container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{INDEX_KEY}']"}}})
        spec.update(nodeName="standin", hostname=f"{self.job_name}-{index}"[:63])
        self.container = container
        labels = {**template.get("metadata", {}).get("labels", {}), "batch.kubernetes.io/job-name": self.job_name,
                  "job-name": self.job_name, INDEX_KEY: str(index),
                  "batch.kubernetes.io/controller-uid": meta["uid"], "controller-uid": meta["uid"]}
        self.object: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": str(uuid.uuid4()),
                         "creationTimestamp": now(), "resourceVersion": cluster.version(), "labels": labels,
                         "annotations": {INDEX_KEY: str(index)},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": self.job_name,
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec,
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [self._container_status({"waiting": {"reason": "ContainerCreating"}})]},
        }
        self.directory = os.path.join(cluster.state, self.name)
        os.makedirs(self.directory)
        self.log_path = os.path.join(self.directory, "log")
        self.created = time.monotonic()
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.started = 0.0
        self.kill_reason: Optional[tuple[str, str, str]] = None  # (pod reason or "", container reason, message)
        self.deleting_since: Optional[float] = None

    def _container_status(self, state: dict[str, Any], ready: bool = False) -> dict[str, Any]:
        container = self.container
        return {"name": container["name"], "image": container["image"], "imageID": "",
                "ready": ready, "restartCount": 0, "started": "running" in state, "state": state, "lastState": {}}

    @property
    def phase(self) -> str:
        return str(self.object["status"]["phase"])

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def step(self, cluster: Cluster) -> None:
        """Advance the pod's life by what happened since the last tick."""
        status, container = self.object["status"], self.object["spec"]["containers"][0]
        if self.finished:
            return
        if self.process is None:
            if self.deleting_since is not None:
                return
            busy = sum(cpu_request(p.container) for p in cluster.pods.values() if p.process and not p.finished)
            if busy + cpu_request(container) > cluster.cpus:
                status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                         "message": "0/1 nodes are available: 1 Insufficient cpu."}]
                return
            status["conditions"] = [{"type": "PodScheduled", "status": "True"}]
            if cluster.unpullable and re.search(cluster.unpullable, container.get("image", "")):
                reason = "ImagePullBackOff" if time.monotonic() - self.created > PULL_BACKOFF_AFTER else "ErrImagePull"
                status["containerStatuses"] = [self._container_status({"waiting": {
                    "reason": reason, "message": f"Back-off pulling image \"{container.get('image')}\""}})]
                return
            try:
                env = self._environment(cluster)
            except ApiError as problem:
                status["containerStatuses"] = [self._container_status({"waiting": {
                    "reason": "CreateContainerConfigError", "message": problem.message}})]
                return
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    list(container.get("command", [])) + list(container.get("args", [])), env=env,
                    cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            self.started = time.monotonic()
            status.update(phase="Running", startTime=now())
            status["containerStatuses"] = [self._container_status({"running": {"startedAt": now()}}, ready=True)]
            return
        code = self.process.poll()
        if code is None:
            self._enforce_limits(container)
            return
        reason, container_reason, message = self.kill_reason or ("", "Completed" if code == 0 else "Error", "")
        exit_code = 137 if container_reason == "OOMKilled" else (code if code >= 0 else 128 - code)
        status["phase"] = "Succeeded" if code == 0 and not self.kill_reason else "Failed"
        if reason:
            status.update(reason=reason, message=message)
        status["containerStatuses"] = [self._container_status({"terminated": {
            "exitCode": exit_code, "reason": container_reason, "startedAt": now(), "finishedAt": now()}})]
        self.object["metadata"]["resourceVersion"] = cluster.version()

    def _environment(self, cluster: Cluster) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.directory, "HOSTNAME": self.name}
        for variable in self.object["spec"]["containers"][0].get("env", []):
            source = variable.get("valueFrom")
            if source is None:
                env[variable["name"]] = variable.get("value", "")
            elif "fieldRef" in source:
                env[variable["name"]] = str(self.index)
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = cluster.secrets.get((self.namespace, ref["name"]))
                if secret is None or ref["key"] not in secret.get("data", {}):
                    raise ApiError(400, "BadRequest", f"secret \"{ref['name']}\" not found" if secret is None
                                   else f"couldn't find key {ref['key']} in Secret {self.namespace}/{ref['name']}")
                env[variable["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    def _enforce_limits(self, container: dict[str, Any]) -> None:
        assert self.process is not None
        deadline = self.object["spec"].get("activeDeadlineSeconds")
        if deadline and time.monotonic() - self.started > deadline and self.kill_reason is None:
            self.kill_reason = ("DeadlineExceeded", "Error",
                                "Pod was active on the node longer than the specified deadline")
            self.signal(signal.SIGKILL)
        limit = (container.get("resources") or {}).get("limits", {}).get("memory")
        if limit and self.kill_reason is None and self.resident_bytes() > quantity_bytes(limit):
            self.kill_reason = ("", "OOMKilled", "")
            self.signal(signal.SIGKILL)

    def resident_bytes(self) -> int:
        """Resident memory of every process in the pod's session (its process tree)."""
        assert self.process is not None
        total = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.process.pid:  # the session id
                    total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
        return total

    def signal(self, number: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)

    def delete(self) -> None:
        if self.deleting_since is None:
            self.deleting_since = time.monotonic()
            self.object["metadata"]["deletionTimestamp"] = now()
            self.signal(signal.SIGTERM)

    def gone(self) -> bool:
        """A deleted pod disappears once its process has ended (SIGKILL after its grace period)."""
        if self.deleting_since is None:
            return False
        if self.process is None or self.process.poll() is not None:
            return True
        if time.monotonic() - self.deleting_since > self.object["spec"].get("terminationGracePeriodSeconds", 30):
            self.signal(signal.SIGKILL)
        return False


class Cluster:
    """The stored objects and the Job controller (one thread, every TICK seconds)."""

    def __init__(self, state: str, unpullable: str, cpus: float) -> None:
        self.state, self.unpullable, self.cpus = state, unpullable, cpus
        self.lock = threading.RLock()
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.faults: dict[str, Any] = {}
        self._version = 0
        self.stopping = False

    def version(self) -> str:
        self._version += 1
        return str(self._version)

    # ------------------------------------------------------------ Jobs

    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta, spec = body.setdefault("metadata", {}), body.get("spec") or {}
        name = meta.get("name") or ""
        if not DNS_LABEL.fullmatch(name) or len(name) > 63:
            raise ApiError(422, "Invalid", f"Job.batch \"{name}\" is invalid: metadata.name: Invalid value")
        containers = (spec.get("template", {}).get("spec") or {}).get("containers") or []
        if not containers or not all(c.get("name") and c.get("image") for c in containers):
            raise ApiError(422, "Invalid", f"Job.batch \"{name}\" is invalid: spec.template.spec.containers: Required")
        if spec["template"]["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            raise ApiError(422, "Invalid", f"Job.batch \"{name}\" is invalid: spec.template.spec.restartPolicy")
        if spec.get("completionMode") == "Indexed" and not spec.get("completions"):
            raise ApiError(422, "Invalid", f"Job.batch \"{name}\" is invalid: spec.completions: Required")
        with self.lock:
            if (namespace, name) in self.jobs:
                raise ApiError(409, "AlreadyExists", f"jobs.batch \"{name}\" already exists")
            uid = str(uuid.uuid4())
            meta.update(namespace=namespace, uid=uid, creationTimestamp=now(), resourceVersion=self.version(),
                        generation=1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("completions", 1)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
            spec.setdefault("suspend", False)
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            body.update(spec=spec, status={"startTime": now(), "active": 0, "succeeded": 0, "failed": 0})
            body.setdefault("apiVersion", "batch/v1")
            body.setdefault("kind", "Job")
            body["_standin"] = {"succeeded": [], "failed": [], "failures": {}, "finished_at": None}
            self.jobs[(namespace, name)] = body
            return self.public(body)

    @staticmethod
    def public(job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if k != "_standin"}

    def delete_job(self, namespace: str, name: str, propagation: str) -> None:
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
            if job is None:
                raise ApiError(404, "NotFound", f"jobs.batch \"{name}\" not found")
            if propagation != "Orphan":
                for pod in self.pods.values():
                    if pod.job_name == name and pod.namespace == namespace:
                        pod.delete()

    def reconcile(self) -> None:
        with self.lock:
            for pod in list(self.pods.values()):
                pod.step(self)
                if pod.gone():
                    del self.pods[(pod.namespace, pod.name)]
                    shutil.rmtree(pod.directory, ignore_errors=True)
            for key, job in list(self.jobs.items()):
                self._reconcile_job(key, job)

    def _reconcile_job(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        spec, status, own = job["spec"], job["status"], job["_standin"]
        if own["finished_at"] is not None:
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None and time.monotonic() - own["finished_at"] >= ttl:
                self.delete_job(*key, "Background")
            return
        pods = [p for p in self.pods.values() if p.job_name == key[1] and p.namespace == key[0]
                and p.deleting_since is None]
        succeeded, failed = set(own["succeeded"]), set(own["failed"])
        for pod in pods:
            if pod.finished and not pod.object["metadata"].get("_counted"):
                pod.object["metadata"]["_counted"] = True
                if pod.phase == "Succeeded":
                    succeeded.add(pod.index)
                else:
                    own["failures"][pod.index] = own["failures"].get(pod.index, 0) + 1
                    status["failed"] = status.get("failed", 0) + 1
                    per_index = spec.get("backoffLimitPerIndex")
                    if per_index is not None and own["failures"][pod.index] > per_index:
                        failed.add(pod.index)
        own["succeeded"], own["failed"] = sorted(succeeded), sorted(failed)
        active = [p for p in pods if not p.finished]
        total_failures = sum(own["failures"].values())
        if total_failures > spec["backoffLimit"]:
            for pod in active:
                pod.delete()
            self._finish(job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
            return
        busy = {p.index for p in active}
        waiting = [i for i in range(spec["completions"]) if i not in succeeded | failed | busy]
        for index in waiting[:max(0, spec["parallelism"] - len(active))]:
            pod = Pod(self, job, index)
            self.pods[(pod.namespace, pod.name)] = pod
            active.append(pod)
        status.update(active=len(active), ready=sum(p.phase == "Running" for p in active), succeeded=len(succeeded),
                      completedIndexes=ranges(succeeded))
        if spec.get("backoffLimitPerIndex") is not None:
            status["failedIndexes"] = ranges(failed)
        if len(succeeded | failed) == spec["completions"]:
            if failed:
                self._finish(job, "Failed", "FailedIndexes", "Job has failed indexes")
            else:
                self._finish(job, "Complete", "CompletionsReached", "Reached expected number of succeeded pods")

    def _finish(self, job: dict[str, Any], kind: str, reason: str, message: str) -> None:
        job["_standin"]["finished_at"] = time.monotonic()
        job["status"]["conditions"] = [{"type": kind, "status": "True", "reason": reason, "message": message,
                                        "lastProbeTime": now(), "lastTransitionTime": now()}]
        job["status"]["completionTime" if kind == "Complete" else "failedTime"] = now()
        job["status"]["active"] = 0
        job["metadata"]["resourceVersion"] = self.version()

    def run_controller(self) -> None:
        while not self.stopping:
            try:
                self.reconcile()
            except Exception as exc:  # a bug here must show, not silently stop the controller
                print(f"k8s_standin: controller error: {exc!r}", file=sys.stderr, flush=True)
            time.sleep(TICK)

    def kill_everything(self) -> None:
        with self.lock:
            for pod in self.pods.values():
                pod.signal(signal.SIGKILL)


def pod_object(pod: Pod) -> dict[str, Any]:
    meta = {k: v for k, v in pod.object["metadata"].items() if not k.startswith("_")}
    return {**pod.object, "metadata": meta}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: Cluster
    token: str

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _reply(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, verb: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/standin/faults" and verb == "POST":
                self.cluster.faults = json.loads(raw)
                return self._reply(200, {"ok": True})
            if self.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            faults = self.cluster.faults
            if faults.get("count", 0) > 0 and faults.get("match", "") in url.path:
                faults["count"] -= 1
                raise ApiError(int(faults["status"]), "InternalError", "injected by the stand-in")
            body = json.loads(raw) if raw else {}
            code, answer = self._route(verb, url.path.rstrip("/").split("/")[1:], query, body)
            return self._reply(code, answer, "text/plain" if isinstance(answer, str) else "application/json")
        except ApiError as problem:
            return self._reply(problem.code, problem.status())

    def _route(self, verb: str, parts: list[str], query: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        cluster = self.cluster
        if parts == ["version"]:
            return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-clustrix-standin"}
        if parts[:3] == ["apis", "batch", "v1"] and len(parts) >= 6 and parts[3] == "namespaces" and parts[5] == "jobs":
            return self._jobs(verb, parts[4], parts[6] if len(parts) > 6 else None, query, body)
        if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[2] == "namespaces":
            namespace, kind, rest = parts[3], parts[4], parts[5:]
            if kind == "pods":
                return self._pods(verb, namespace, rest, query, body)
            if kind == "secrets":
                with cluster.lock:
                    if verb == "POST":
                        name = body.get("metadata", {}).get("name", "")
                        body.setdefault("metadata", {}).update(namespace=namespace, uid=str(uuid.uuid4()),
                                                               creationTimestamp=now())
                        if (namespace, name) in cluster.secrets:
                            raise ApiError(409, "AlreadyExists", f"secrets \"{name}\" already exists")
                        cluster.secrets[(namespace, name)] = body
                        return 201, body
                    if verb == "DELETE" and rest:
                        cluster.secrets.pop((namespace, rest[0]), None)
                        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({verb} /{'/'.join(parts)})")

    def _jobs(self, verb: str, namespace: str, name: Optional[str], query: dict[str, str],
              body: dict[str, Any]) -> tuple[int, Any]:
        cluster = self.cluster
        propagation = query.get("propagationPolicy") or body.get("propagationPolicy") or "Background"
        with cluster.lock:
            if name is None and verb == "POST":
                return 201, cluster.create_job(namespace, body)
            matching = [job for (ns, _), job in cluster.jobs.items() if ns == namespace and selects(
                query.get("labelSelector", ""), job["metadata"].get("labels") or {})]
            if name is None and verb == "GET":
                limit = int(query.get("limit") or 0) or None
                return 200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {
                    "resourceVersion": cluster.version()}, "items": [cluster.public(j) for j in matching[:limit]]}
            if name is None and verb == "DELETE":
                for job in matching:
                    cluster.delete_job(namespace, job["metadata"]["name"], propagation)
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
            job = cluster.jobs.get((namespace, name or ""))
            if job is None:
                raise ApiError(404, "NotFound", f"jobs.batch \"{name}\" not found")
            if verb == "GET":
                return 200, cluster.public(job)
            if verb == "DELETE":
                cluster.delete_job(namespace, job["metadata"]["name"], propagation)
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": {"name": name, "group": "batch", "kind": "jobs",
                                         "uid": job["metadata"]["uid"]}}
        raise ApiError(405, "MethodNotAllowed", verb)

    def _pods(self, verb: str, namespace: str, rest: list[str], query: dict[str, str],
              body: dict[str, Any]) -> tuple[int, Any]:
        cluster = self.cluster
        with cluster.lock:
            if not rest and verb == "GET":
                items = [pod_object(p) for (ns, _), p in cluster.pods.items() if ns == namespace and selects(
                    query.get("labelSelector", ""), p.object["metadata"]["labels"])]
                return 200, {"apiVersion": "v1", "kind": "PodList",
                             "metadata": {"resourceVersion": cluster.version()}, "items": items}
            pod = cluster.pods.get((namespace, rest[0])) if rest else None
            if pod is None:
                raise ApiError(404, "NotFound", f"pods \"{rest[0] if rest else ''}\" not found")
            if rest[1:] == ["log"] and verb == "GET":
                with open(pod.log_path, "rb") as log:
                    text = log.read().decode(errors="replace")
                if query.get("tailLines"):
                    text = "".join(text.splitlines(keepends=True)[-int(query["tailLines"]):])
                if query.get("limitBytes"):
                    text = text[:int(query["limitBytes"])]
                return 200, text
            if not rest[1:] and verb == "GET":
                return 200, pod_object(pod)
            if not rest[1:] and verb == "DELETE":
                pod.delete()
                return 200, pod_object(pod)
        raise ApiError(405, "MethodNotAllowed", verb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True)
    parser.add_argument("--state", help="where pods' directories and logs go (default: a new temporary directory)")
    parser.add_argument("--unpullable", default="does-not-exist", help="regex of image names that fail to pull")
    parser.add_argument("--cpus", type=float, default=16, help="the one node's CPUs: pods that do not fit wait")
    args = parser.parse_args()
    state = args.state or tempfile.mkdtemp(prefix="k8s-standin-")
    cluster = Cluster(state, args.unpullable, args.cpus)
    handler = type("BoundHandler", (Handler,), {"cluster": cluster, "token": args.token})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    controller = threading.Thread(target=cluster.run_controller, daemon=True)
    controller.start()

    def stop(*_: Any) -> None:
        cluster.stopping = True
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        cluster.kill_everything()
        if not args.state:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
