"""The kubernetes backend, through the real ``kubernetes`` client, against the in-repo API stand-in
(tests/k8s_standin.py), whose pods really run as local processes; payloads and results through S3 (moto).

No Kubernetes API server can run here: this is the only place the backend is verified.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from support import workloads
from support.executors import killed_client

from clustrix_futures import ClusterPoolExecutor, ConfigError, JobFailedError

RESULT_WAIT = 120


@pytest.fixture
def k8s(kubernetes_options, s3_options, k8s_standin):
    """Builds kubernetes executors with S3 storage; shuts them down after the test."""
    made = []

    def make(max_workers=None, **options):
        ex = ClusterPoolExecutor(max_workers, backend="kubernetes", **{**kubernetes_options, **s3_options,
                                                                          **options})
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def api(k8s_standin):
    """The real client's BatchV1Api and CoreV1Api, on the stand-in."""
    from kubernetes import client, config

    connection = config.new_client_from_config(config_file=k8s_standin["kubeconfig"])
    return client.BatchV1Api(connection), client.CoreV1Api(connection)


def run_jobs(api, ex):
    jobs = api[0].list_namespaced_job("clustrix", label_selector=f"clustrix-futures/run={ex.run_dir.split('/')[-1]}")
    return jobs.items


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_batch_is_one_indexed_job_with_the_options(k8s, api, signals):
    ex = k8s(2, cpus=2, mem="256M", gpus=1, time="00:10:00", service_account="runner", tasks_per_element=1)
    release = signals / "release"
    futures = [ex.submit(workloads.wait_for_file, str(release)) for _ in range(5)]
    wait_until(lambda: len(run_jobs(api, ex)) == 1)
    (job,) = run_jobs(api, ex)
    spec = job.spec
    assert (spec.completion_mode, spec.completions, spec.parallelism, spec.backoff_limit_per_index) == (
        "Indexed", 5, 2, 0)
    pod = spec.template.spec
    assert pod.restart_policy == "Never" and pod.service_account_name == "runner"
    assert pod.active_deadline_seconds == 600
    (container,) = pod.containers
    assert container.image == "clustrix-futures-test:standin" and container.command[:2] == ["/bin/sh", "-c"]
    assert container.resources.requests == {"cpu": "2", "memory": "256Mi"}
    assert container.resources.limits == {"memory": "256Mi", "nvidia.com/gpu": "1"}
    env = {variable.name: variable for variable in container.env}
    assert env["AWS_ACCESS_KEY_ID"].value_from.secret_key_ref.name == "s3-credentials"
    assert env["AWS_DEFAULT_REGION"].value == "us-east-1"
    wait_until(lambda: sum(p.status.phase == "Running" for p in api[1].list_namespaced_pod(
        "clustrix", label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}").items) == 2)
    # the controller pass that reports both ready is the one that would have started a third pod
    wait_until(lambda: api[0].read_namespaced_job(job.metadata.name, "clustrix").status.ready == 2)
    assert len(api[1].list_namespaced_pod("clustrix", label_selector=f"batch.kubernetes.io/job-name="
                                                                      f"{job.metadata.name}").items) == 2
    release.touch()
    assert [f.result(RESULT_WAIT) for f in futures] == [str(release)] * 5


def test_each_cycle_lists_jobs_and_pods_once(k8s):
    ex = k8s(tasks_per_element=10)
    futures = [ex.submit(workloads.sleep_then, 0.02, i) for i in range(100)]
    assert [f.result(RESULT_WAIT) for f in futures] == list(range(100))
    calls, cycles = ex.scheduler_commands, ex._engine.monitor.cycles
    assert 1 <= calls["list_namespaced_pod"] <= cycles
    assert calls["list_namespaced_job"] <= cycles + 1  # + the check at start-up
    assert calls["create_namespaced_job"] == ex._engine.monitor.batches
    assert not {"read_namespaced_job", "read_namespaced_pod"} & set(calls)


def test_jobs_are_deleted_once_done_with_unless_they_failed(k8s, api):
    ex = k8s()
    assert ex.submit(workloads.square, 4).result(RESULT_WAIT) == 16
    (first,) = [job.metadata.name for job in run_jobs(api, ex)]
    assert ex.submit(workloads.square, 5).result(RESULT_WAIT) == 25
    with pytest.raises(JobFailedError):
        ex.submit(noisy_death).result(RESULT_WAIT)
    # the first status query after a Job's result deletes it (a result may be listed before any query of its
    # own Job: then the next submission's queries do)
    assert first not in [job.metadata.name for job in run_jobs(api, ex)]
    ex.shutdown()
    assert len(run_jobs(api, ex)) == 1  # kept with the run's files, for its logs (Kubernetes' TTL: one day)


def test_cancel_of_a_queued_element_deletes_its_job(k8s, api):
    """A pod asking for more CPUs than the stand-in's node has stays Pending: cancel withdraws it."""
    ex = k8s()
    future = ex.options(cpus=64).submit(workloads.square, 2)
    wait_until(lambda: len(run_jobs(api, ex)) == 1)
    assert future.cancel()
    wait_until(lambda: run_jobs(api, ex) == [], 30)
    assert future.cancelled()
    assert ex.submit(workloads.square, 3).result(RESULT_WAIT) == 9


def test_a_job_deleted_by_someone_else_fails_with_cancelled(k8s, api, signals):
    ex = k8s()
    started = signals / "started"
    future = ex.submit(workloads.touch_then_wait, str(started), str(signals / "never"))
    workloads.wait_for_file(str(started), RESULT_WAIT)
    (job,) = run_jobs(api, ex)
    api[0].delete_namespaced_job(job.metadata.name, "clustrix", propagation_policy="Background")
    with pytest.raises(JobFailedError) as caught:
        future.result(60)
    assert caught.value.state == "CANCELLED"


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    time.sleep(3)
    return len(block)


def test_memory_over_the_limit_fails_with_oomkilled(k8s):
    ex = k8s(mem="128M")
    with pytest.raises(JobFailedError) as caught:
        ex.submit(allocate, 400).result(RESULT_WAIT)
    assert caught.value.state == "OOMKilled" and "exit code 137" in str(caught.value)
    assert ex.submit(allocate, 1).result(RESULT_WAIT) == 1024 * 1024


def test_time_limit_fails_with_deadline_exceeded(k8s):
    ex = k8s(time="00:02")
    with pytest.raises(JobFailedError) as caught:
        ex.submit(workloads.sleep_then, 60).result(RESULT_WAIT)
    assert caught.value.state == "DeadlineExceeded"


def test_image_that_cannot_be_pulled_fails_and_its_job_goes(k8s, api):
    ex = k8s(image="registry.example/does-not-exist:1")
    futures = [ex.submit(workloads.square, i) for i in range(3)]
    for future in futures:
        with pytest.raises(JobFailedError) as caught:
            future.result(RESULT_WAIT)
        assert caught.value.state == "ImagePullBackOff"
    wait_until(lambda: run_jobs(api, ex) == [])


def test_missing_secret_fails_with_create_container_config_error(k8s):
    ex = k8s(env={"TOKEN": {"secret": "no-such-secret", "key": "token"}})
    with pytest.raises(JobFailedError) as caught:
        ex.submit(workloads.square, 2).result(RESULT_WAIT)
    assert caught.value.state == "CreateContainerConfigError" and "no-such-secret" in str(caught.value)


def noisy_death() -> None:
    sys.stderr.write("about to die\n")
    sys.stderr.flush()
    os._exit(3)


def test_failing_pod_fails_with_its_exit_code_and_log(k8s):
    ex = k8s()
    with pytest.raises(JobFailedError) as caught:
        ex.submit(noisy_death).result(RESULT_WAIT)
    assert caught.value.state == "FAILED" and "exit code 3" in str(caught.value)
    assert "about to die" in caught.value.log_tail


def test_api_errors_for_a_while_fail_nothing(k8s, k8s_standin, signals, caplog):
    import json
    import urllib.request

    def inject(count: int) -> None:
        request = urllib.request.Request(f"{k8s_standin['url']}/standin/faults", method="POST", data=json.dumps(
            {"status": 503, "count": count, "match": "/pods"}).encode())
        urllib.request.urlopen(request, timeout=10).read()

    ex = k8s()
    started, release = signals / "started", signals / "release"
    future = ex.submit(workloads.touch_then_wait, str(started), str(release))
    workloads.wait_for_file(str(started), RESULT_WAIT)
    try:
        inject(3)
        wait_until(lambda: caplog.text.count("listing Jobs and pods failed, will retry") >= 3)
    finally:
        inject(0)
    release.touch()
    assert future.result(RESULT_WAIT) == str(release)


def test_retry_state_runs_an_element_again_as_a_job_of_its_own(k8s, api, signals):
    ex = k8s(retry_states=["OOMKilled"], retries=1, mem="128M")
    marker = signals / "first-attempt"

    def big_once(path: str) -> str:
        if not os.path.exists(path):
            open(path, "w").close()
            allocate(400)
        return "second attempt"

    assert ex.submit(big_once, str(marker)).result(RESULT_WAIT) == "second attempt"


@pytest.mark.parametrize("change,message", [
    ({"image": None}, "needs the option 'image'"),
    ({"storage": None}, "needs S3 storage"),
    ({"kubeconfig": "/nonexistent/kubeconfig"}, "cannot load the Kubernetes configuration"),
])
def test_configuration_errors(kubernetes_options, s3_options, change, message):
    options = {**kubernetes_options, **s3_options, **change}
    with pytest.raises(ConfigError, match=message):
        ClusterPoolExecutor(backend="kubernetes", **{k: v for k, v in options.items() if v is not None})


def test_unreachable_api_is_a_config_error(kubernetes_options, s3_options, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n"
                          "    server: http://127.0.0.1:9\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n"
                          "- name: c\n  context:\n    cluster: c\n    user: u\n")
    with pytest.raises(ConfigError, match="cannot list Jobs in the Kubernetes namespace 'default'"):
        ClusterPoolExecutor(backend="kubernetes", **{**kubernetes_options, **s3_options,
                                                     "kubeconfig": str(kubeconfig)})


def test_attach_after_the_client_was_killed(kubernetes_options, s3_options, tmp_path):
    options = {**kubernetes_options, **s3_options, "tasks_per_element": 2}
    run_dir = killed_client(tmp_path, {"max_workers": 3, "backend": "kubernetes", **options}, tasks=20, seconds=0.3)
    assert run_dir.startswith("s3://")
    # the manifest records the Secret references of env, not its literal values: those are given again
    ex = ClusterPoolExecutor.attach(run_dir, endpoint_url=s3_options["endpoint_url"],
                                    env={"AWS_DEFAULT_REGION": "us-east-1"})
    try:
        assert ex.backend == "kubernetes"
        assert [f.result(RESULT_WAIT) for f in ex.futures] == list(range(20))
        assert ex.submit(workloads.square, 3).result(RESULT_WAIT) == 9
    finally:
        ex.shutdown()
