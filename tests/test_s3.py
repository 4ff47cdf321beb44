"""S3 storage against a real S3-compatible server (moto in server mode, tests/infra/s3.sh), with the real SLURM.

The conformance suite runs on ``slurm-s3`` too; these tests check what is particular to S3: where things live,
what each monitor cycle costs, the worker's checkpoints, and the errors at start-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from support import workloads
from support.executors import killed_client

from clustrix_futures import ClusterPoolExecutor, ConfigError, JobFailedError
from clustrix_futures.remote.storage import S3Storage

TESTS = Path(__file__).parent


def keys(s3: dict[str, str], url: str) -> list[str]:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=s3["CF_S3_ENDPOINT"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(item["Key"][len(prefix) + 1:] for page in pages for item in page.get("Contents", ()))


def host_dir(s3: dict[str, str], url: str) -> str:
    """Where a run keeps its scripts and logs on disk: its manifest's ``host_dir`` (read while the run exists)."""
    bucket, _, prefix = url[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=s3["CF_S3_ENDPOINT"])
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")
    return str(json.loads(body["Body"].read())["host_dir"])


def test_payloads_and_results_live_in_s3_scripts_and_logs_on_disk(slurm_executor, s3, s3_options):
    ex = slurm_executor(keep_files=True, tasks_per_element=2, **s3_options)
    assert [f.result(120) for f in [ex.submit(workloads.square, i) for i in range(4)]] == [0, 1, 4, 9]
    ex.shutdown()
    root = ex.run_dir
    assert root is not None and root.startswith(s3_options["storage"] + "/")
    assert keys(s3, root) == ["batches/0.json", "batches/0.pkl", "manifest.json", "results/0-0.res",
                                  "results/0-1.res"]  # the checkpoints (.part) were deleted
    host = Path(host_dir(s3, root))
    assert sorted(p.name for p in (host / "batches").iterdir()) == ["0.sh"]
    assert {p.name for p in (host / "logs").iterdir()} == {"0-0.out", "0-0.err", "0-1.out", "0-1.err"}
    assert not (host / "results").exists()


def test_each_cycle_lists_results_with_one_request(slurm_executor, s3_options):
    ex = slurm_executor(tasks_per_element=5, **s3_options)
    futures = [ex.submit(workloads.sleep_then, 0.05, i) for i in range(60)]
    assert [f.result(120) for f in futures] == list(range(60))
    monitor, requests = ex._engine.monitor, ex._engine.storage.requests
    # one per cycle, one more after a status report that shows elements gone, and the bucket check at start-up
    assert 1 <= requests["ListObjectsV2"] <= monitor.cycles + ex.scheduler_commands["squeue"] + 1
    assert requests["GetObject"] == monitor.results_read >= 12  # each element's result, read once
    assert requests["PutObject"] == 1 + 2 * monitor.batches  # manifest; per batch: payloads, record


def test_listing_pages_through_more_than_a_thousand_results(s3, s3_options):
    """One paginated list_objects_v2: two pages for 1500 objects, all of them found."""
    storage = S3Storage(s3["CF_S3_ENDPOINT"])
    root = s3_options["storage"] + "/many"

    async def scenario() -> list[str]:
        await asyncio.gather(*(storage.write(f"{root}/results/{i}-0.res", b"x") for i in range(1500)))
        await storage.write(f"{root}/results/sub/deeper", b"y")
        before = storage.requests.get("ListObjectsV2", 0)
        names = await storage.listdir(f"{root}/results")
        assert storage.requests["ListObjectsV2"] - before == 2
        contents = await storage.read_many([f"{root}/results/7-0.res", f"{root}/results/missing"])
        assert contents == {f"{root}/results/7-0.res": b"x", f"{root}/results/missing": None}
        await storage.remove_tree(root)
        assert await storage.listdir(f"{root}/results") == []
        await storage.close()
        return names

    names = asyncio.run(scenario())
    assert len(names) == 1501 and "sub" in names and "1499-0.res" in names


def test_run_is_removed_from_s3_and_disk_after_success_and_kept_after_failure(slurm_executor, s3, s3_options):
    ok = slurm_executor(**s3_options)
    assert ok.submit(workloads.square, 2).result(120) == 4
    host = host_dir(s3, ok.run_dir)
    assert Path(host).exists()
    ok.shutdown()
    assert keys(s3, ok.run_dir) == [] and not Path(host).exists()
    bad = slurm_executor(**s3_options)
    with pytest.raises(workloads.CustomError):
        bad.submit(workloads.raise_custom, "x").result(120)
    bad.shutdown()
    assert "manifest.json" in keys(s3, bad.run_dir)


def test_packed_element_that_dies_keeps_its_checkpointed_tasks(slurm_executor, s3_options):
    """The first task of an element is checkpointed to results/B-I.part before the next one runs."""
    ex = slurm_executor(tasks_per_element=3, **s3_options)
    futures = [ex.submit(workloads.square, 2), ex.submit(workloads.die, 7), ex.submit(workloads.square, 3)]
    assert futures[0].result(120) == 4
    with pytest.raises(JobFailedError) as caught:
        futures[1].result(120)
    assert caught.value.state == "FAILED" and "exit code 7" in str(caught.value)
    with pytest.raises(JobFailedError):
        futures[2].result(120)


def mark_skipped(endpoint: str, key: str) -> str:
    """A task that writes another task's skip marker (as the monitor would), then lets time pass."""
    import time

    bucket, _, name = key.partition("/")
    boto3.client("s3", endpoint_url=endpoint).put_object(Bucket=bucket, Key=name, Body=b"")
    time.sleep(0.5)
    return "marked"


def test_worker_skips_marked_tasks_at_start_and_at_checkpoints(s3, s3_options):
    """The worker itself, on a batch in S3: task 0 is marked before it starts; task 2 runs and marks task 3
    while the element runs, and the checkpoint after it sees that marker."""
    import cloudpickle

    from clustrix_futures.runfiles.batches import encode_batch
    from clustrix_futures.runfiles.journal import read_journal

    root = s3_options["storage"] + "/run"
    bucket, _, prefix = root[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=s3["CF_S3_ENDPOINT"])
    tasks = [(0, (workloads.square, (5,), {})), (1, (workloads.square, (6,), {})),
             (2, (mark_skipped, (s3["CF_S3_ENDPOINT"], f"{bucket}/{prefix}/skip/3"), {})),
             (3, (workloads.square, (7,), {}))]
    batch = encode_batch([[(task_id, cloudpickle.dumps(call)) for task_id, call in tasks]])
    client.put_object(Bucket=bucket, Key=f"{prefix}/batches/0.pkl", Body=batch)
    client.put_object(Bucket=bucket, Key=f"{prefix}/skip/0", Body=b"")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "CLUSTRIX_S3_ENDPOINT_URL": s3["CF_S3_ENDPOINT"]}
    subprocess.run([sys.executable, "-m", "clustrix_futures.node.worker", "element", root, "0", "0"], env=env,
                   check=True, timeout=120)
    journal = client.get_object(Bucket=bucket, Key=f"{prefix}/results/0-0.res")["Body"].read()
    assert [task_id for task_id, _ in read_journal(journal)] == [1, 2]
    assert "results/0-0.part" not in keys(s3, root)


def test_attach_to_an_s3_run_after_the_client_was_killed(slurm, s3, s3_options, tmp_path):
    run_dir = killed_client(tmp_path, {"backend": "slurm", "work_dir": str(tmp_path / "runs"), "tasks_per_element": 5,
                                       **s3_options}, tasks=40, seconds=0.2)
    assert run_dir.startswith("s3://")
    ex = ClusterPoolExecutor.attach(run_dir, endpoint_url=s3_options["endpoint_url"])
    try:
        assert [f.result(120) for f in ex.futures] == list(range(40))
        assert ex.submit(workloads.square, 3).result(120) == 9
    finally:
        ex.shutdown()


def test_a_bucket_that_does_not_exist_is_a_config_error(slurm, s3, tmp_path):
    with pytest.raises(ConfigError, match="cannot use the S3 storage s3://no-such-bucket"):
        ClusterPoolExecutor(backend="slurm", work_dir=str(tmp_path), storage="s3://no-such-bucket/x",
                            endpoint_url=s3["CF_S3_ENDPOINT"])


def test_an_interpreter_without_boto3_is_a_config_error(slurm, s3_options, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import boto3"], capture_output=True).returncode != 0
    with pytest.raises(ConfigError, match="cannot import boto3"):
        ClusterPoolExecutor(backend="slurm", work_dir=str(tmp_path), python=python, **s3_options)


@pytest.mark.parametrize("storage", ["s3://", "file:///tmp/x", "s3://UPPER/x"])
def test_storage_must_be_an_s3_location(storage):
    with pytest.raises(ConfigError, match="option 'storage' must be an S3 location"):
        ClusterPoolExecutor(backend="slurm", storage=storage)


def test_filesystem_runs_import_no_boto3_on_the_node(slurm_executor):
    """The stdlib + cloudpickle promise: a filesystem run's worker never imports boto3 (nor storage)."""
    ex = slurm_executor()
    names = ["boto3", "botocore", "clustrix_futures.remote.storage"]
    assert ex.submit(lambda: [n for n in names if n in sys.modules]).result(120) == []
