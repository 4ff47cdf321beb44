"""The admin commands (doctor, status, logs, cancel, clean, nodes) against the real SLURM, here and over SSH.

Each command runs in-process through ``cli.main``, as ``clustrix-futures ...`` would run it. Runs are made by a
client process that exits without shutting its executor down (as a crashed or finished script would), leaving
two tasks running: the commands must read, cancel and remove them without that client.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.infra import REMOTE_WORK_DIR, ssh_options

from clustrix_futures.tools import cli
from clustrix_futures.tools.doctor import FAIL, PASS, Doctor
from clustrix_futures.tools.nodes import gpu_counts, parse_nodes, partitions

WAIT = 120  # seconds: a bound against hangs, never a performance assertion
TESTS = Path(__file__).parent


@pytest.fixture(params=["slurm", "slurm-ssh"])
def where(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The cluster the commands talk to, as ``args`` (CLI flags) and ``options`` (executor options): SLURM on
    this machine, SLURM over SSH as cfuser through a profile, or (where a test asks for it) SLURM with S3
    storage. Each test has a work_dir of its own."""
    request.getfixturevalue("slurm")
    if request.param == "slurm":
        work_dir = str(tmp_path / "runs")
        return {"args": ["--work-dir", work_dir], "options": {"backend": "slurm", "work_dir": work_dir},
                "work_dir": work_dir, "remote": False}
    if request.param == "slurm-s3":  # payloads and results in S3, scripts and logs in work_dir
        work_dir, s3 = str(tmp_path / "runs"), request.getfixturevalue("s3_options")
        args = ["--work-dir", work_dir, "--option", f"storage={s3['storage']}",
                "--option", f"endpoint_url={s3['endpoint_url']}"]
        return {"args": args, "options": {"backend": "slurm", "work_dir": work_dir, **s3}, "work_dir": work_dir,
                "remote": True}
    if request.param == "kubernetes-s3":  # the Jobs API stand-in; everything but the pods' logs in S3
        s3 = request.getfixturevalue("s3_options")
        options = {"backend": "kubernetes", **request.getfixturevalue("kubernetes_options"), **s3}
        args = ["--option", f"storage={s3['storage']}", "--option", f"endpoint_url={s3['endpoint_url']}"]
        return {"args": args, "options": options, "work_dir": None, "remote": True}
    options = {"backend": "slurm", **ssh_options(request.getfixturevalue("sshd"))}
    options["work_dir"] = f"{REMOTE_WORK_DIR}/cli-{secrets.token_hex(4)}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"profiles": {"remote": options}}))
    monkeypatch.setenv("CLUSTRIX_FUTURES_CONFIG", str(config))
    return {"args": ["--profile", "remote"], "options": options, "work_dir": options["work_dir"], "remote": True}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def make_run(tmp_path: Path, options: dict[str, Any]) -> str:
    """A client that submits 5 tasks (0: prints, 1: returns, 2: raises, 3 and 4: run for 10 minutes), waits for
    the first three, prints its run directory and exits without shutting down."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(TESTS)!r})
        from support import workloads
        from clustrix_futures import ClusterPoolExecutor
        ex = ClusterPoolExecutor(**{{**{options!r}, "tasks_per_element": 1}})
        quick = [ex.submit(print, "hello-from-task-0"), ex.submit(workloads.sleep_then, 0, 1), ex.submit(divmod, 1, 0)]
        slow = [ex.submit(workloads.sleep_then, 600, i) for i in range(2)]
        for future in quick:
            future.exception(timeout={WAIT})
        print(ex.run_dir, flush=True)
        os._exit(0)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def status_json(capsys: pytest.CaptureFixture[str], args: list[str], *run: str) -> Any:
    code, out = run_cli(capsys, "status", *run, "--json", *args)
    assert code == 0, out
    return json.loads(out)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.5)


# ------------------------------------------------------------------ status, logs, cancel, clean


@pytest.mark.parametrize("where", ["slurm", "slurm-ssh", "slurm-s3", "kubernetes-s3"], indirect=True)
def test_status_logs_cancel_clean_of_a_run_whose_client_is_gone(where, tmp_path, capsys):
    args = where["args"]
    run_dir = make_run(tmp_path, where["options"])

    status = status_json(capsys, args, run_dir)
    counts = status["counts"]
    assert (counts.get("succeeded"), counts.get("raised")) == (2, 1)
    assert counts.get("running", 0) + counts.get("queued", 0) == 2
    assert status["live_elements"] >= 2  # the quick tasks' elements may still be completing
    assert "ZeroDivisionError" in status["tasks"][2]["detail"]
    code, text = run_cli(capsys, "status", run_dir, *args)  # the table a person reads
    assert code == 0 and "5 tasks: 2 succeeded, 1 raised" in text and "ZeroDivisionError" in text

    listing = status_json(capsys, args)  # no RUN_DIR: every run in work_dir
    assert [r["run_dir"] for r in listing] == [run_dir] and listing[0]["live_elements"] >= 2

    code, text = run_cli(capsys, "logs", run_dir, "0", *args)
    assert code == 0 and "hello-from-task-0" in text
    code, text = run_cli(capsys, "logs", run_dir, "2", *args)
    assert code == 0 and "raised" in text and "Traceback" in text and "ZeroDivisionError" in text
    code, text = run_cli(capsys, "logs", run_dir, "9", *args)
    assert code == 2 and "no task 9" in text

    code, text = run_cli(capsys, "clean", *args)  # its jobs still run: kept
    assert code == 0 and "still queued or running" in text and "0 removed, 1 kept" in text

    code, text = run_cli(capsys, "cancel", run_dir, *args)
    assert code == 0 and "cancelled 2 tasks in 2 elements" in text
    wait_for(lambda: status_json(capsys, args, run_dir)["live_elements"] == 0, "the cancelled elements end")
    assert status_json(capsys, args, run_dir)["counts"] == {"succeeded": 2, "raised": 1, "cancelled": 2}

    code, text = run_cli(capsys, "clean", "--dry-run", *args)
    assert code == 0 and "would remove" in text and status_json(capsys, args)  # still there
    code, text = run_cli(capsys, "clean", "--older-than", "1d", *args)
    assert code == 0 and "newer than --older-than" in text and status_json(capsys, args)
    code, text = run_cli(capsys, "clean", *args)
    assert code == 0 and "1 removed" in text
    assert status_json(capsys, args) == []
    if not where["remote"]:
        assert not os.path.exists(run_dir)


def test_status_of_something_that_is_not_a_run(where, capsys):
    code, text = run_cli(capsys, "status", "/etc", *where["args"])
    # over SSH /etc is root's, not cfuser's: refused before anything in it is read
    expected = "/etc is not your run directory" if where["remote"] else "not a clustrix-futures run directory"
    assert code == 2 and expected in text, text


# ------------------------------------------------------------------ nodes


def test_nodes_shows_cpus_and_gpus_free_and_what_a_job_takes(where, slurm_executor, signals, capsys):
    def board() -> Any:
        code, out = run_cli(capsys, "nodes", "--backend", "slurm", "--json", *where["args"])
        assert code == 0, out
        return json.loads(out)

    before = board()
    node = next(n for n in before["nodes"] if n["node"] == "localhost")
    assert node["cpus"] == 16 and node["gpus"] == {"tesla": 2} and node["partitions"] == ["debug", "gpu"]
    assert {p["partition"] for p in before["partitions"]} >= {"debug", "gpu"}
    code, text = run_cli(capsys, "nodes", "--backend", "slurm", *where["args"])
    assert code == 0 and "GPUS FREE BY TYPE" in text and "tesla" in text

    from support import workloads

    ex = slurm_executor(partition="gpu", gpus=1, cpus=3)
    holding = ex.submit(workloads.wait_for_file, str(signals / "release"))
    wait_for(lambda: holding.running(), "the GPU job starts")
    during = next(n for n in board()["nodes"] if n["node"] == "localhost")
    assert during["gpus_free"]["tesla"] <= 1 and during["cpus_free"] <= 13
    gpu_partition = json.loads(run_cli(capsys, "nodes", "--backend", "slurm", "--json", "--partition", "gpu",
                                       *where["args"])[1])
    assert [p["partition"] for p in gpu_partition["partitions"]] == ["debug", "gpu"]  # the node is in both
    (signals / "release").touch()
    holding.result(timeout=WAIT)


def test_nodes_parses_typed_gpus_drained_nodes_and_index_lists():
    sample = (
        "NodeName=g1 CPUAlloc=8 CPUTot=64 RealMemory=512000 AllocMem=128000 Gres=gpu:a100:4(S:0-1),gpu:v100:2 "
        "GresUsed=gpu:a100:2(IDX:0,2),gpu:v100:0(IDX:N/A) State=MIXED Partitions=gpu,all\n"
        "NodeName=g2 CPUAlloc=0 CPUTot=64 RealMemory=512000 AllocMem=0 Gres=gpu:a100:4 GresUsed=gpu:a100:0(IDX:N/A) "
        "State=IDLE+DRAIN Partitions=gpu\n"
        "NodeName=c1 CPUAlloc=1 CPUTot=32 RealMemory=1000 AllocMem=0 Gres=(null) State=IDLE Partitions=all\n"
        "NodeName=u1 CPUAlloc=0 CPUTot=8 RealMemory=1000 AllocMem=0 Gres=gpu:2 GresUsed=gpu:1 State=DOWN* "
        "Partitions=all\n")
    nodes = {n.name: n for n in parse_nodes(sample)}
    assert gpu_counts("gpu:a100:2(IDX:0,2),nic:1,gpu:v100:1") == {"a100": 2, "v100": 1}
    assert nodes["g1"].gpus_free() == {"a100": 2, "v100": 2} and nodes["g1"].cpus_free == 56
    assert nodes["g2"].gpus_free() == {"a100": 0} and nodes["g2"].cpus_free == 0  # drained: offers nothing
    assert nodes["u1"].gpus == {"": 2} and nodes["u1"].gpus_free() == {"": 0}  # down, untyped GPUs
    by_name = {p.name: p for p in partitions(nodes.values())}
    assert by_name["gpu"].gpus_free == {"a100": 2, "v100": 2} and by_name["gpu"].nodes_usable == 1
    assert by_name["all"].cpus_free == 56 + 31 and by_name["all"].nodes == 3


# ------------------------------------------------------------------ doctor


def test_doctor_passes_on_a_working_cluster(where, capsys):
    code, text = run_cli(capsys, "doctor", "--backend", "slurm", *where["args"])
    assert code == 0, text
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if line.strip()}
    assert rows["python"] == rows["scheduler"] == rows["work_dir"] == rows["resources"] == PASS
    assert rows["ssh"] == (PASS if where["remote"] else "skipped")
    assert rows["test-job"] == PASS and "1 task ran on" in text


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory cfuser (over SSH) can read and run files from."""
    path = Path(tempfile.mkdtemp(prefix="cf-cli-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _fake_python(directory: Path) -> str:
    fake = directory / "python3"
    fake.write_text("#!/bin/sh\necho 3.99\necho True False\necho -\n")  # as engine._PROBE prints them
    fake.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize("fault", ["missing interpreter", "version mismatch", "unwritable work_dir",
                                   "bad partition", "bad host key"])
def test_doctor_names_each_fault_and_its_fix(fault, where, readable_dir, tmp_path, capsys):
    local = "{}.{}".format(*sys.version_info[:2])
    options = {k: v for k, v in where["options"].items() if k != "backend"}
    if fault == "bad host key" and not where["remote"]:
        pytest.skip("a host key exists only over SSH")
    failing, changes, expected = {
        "missing interpreter": ("python", {"python": "/nonexistent/python3"}, "cannot be run"),
        "version mismatch": ("python", {"python": _fake_python(readable_dir)}, "is Python 3.99"),
        "unwritable work_dir": ("work_dir", {"work_dir": "/dev/null/runs"}, "is not writable"),
        "bad partition": ("resources", {"partition": "nope"}, "invalid partition"),
        "bad host key": ("ssh", {"known_hosts": "WRONG"}, "not trusted"),
    }[fault]
    if fault == "bad host key":
        changes = {"known_hosts": _wrong_known_hosts(tmp_path, options)}
    doctor = Doctor(None, "slurm", {**options, **changes}, job_timeout=WAIT)
    checks = {c.name: c for c in doctor.run()}
    assert checks[failing].result == FAIL and expected in checks[failing].detail, checks[failing]
    hint = {"python": f"Python {local}", "work_dir": "set 'work_dir'", "resources": "one of: debug, gpu",
            "ssh": "ssh-keyscan"}[failing]
    assert hint in checks[failing].fix
    assert checks["test-job"].result == "skipped"  # nothing was submitted after a failed check
    argv = ["doctor", "--backend", "slurm", *where["args"]]
    for name, value in changes.items():
        argv += ["--work-dir", value] if name == "work_dir" else ["--option", f"{name}={value}"]
    code, text = run_cli(capsys, *argv)
    assert code == 1 and "how to fix:" in text and hint in text


def _wrong_known_hosts(tmp_path: Path, options: dict[str, Any]) -> str:
    key = tmp_path / "not_the_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = Path(f"{key}.pub").read_text().split()
    known = tmp_path / "wrong_known_hosts"
    known.write_text(f"[{options['host']}]:{options['port']} {public[0]} {public[1]}\n")
    return str(known)


def test_doctor_reports_a_bad_profile(tmp_path, monkeypatch, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"profiles": {"broken": {"backend": "slurm", "partitoin": "debug"}}}))
    monkeypatch.setenv("CLUSTRIX_FUTURES_CONFIG", str(config))
    code, text = run_cli(capsys, "doctor", "--profile", "broken")
    assert code == 1 and "unknown option 'partitoin'" in text


def test_admin_commands_are_on_the_console_script():
    done = subprocess.run(["clustrix-futures", "--help"], capture_output=True, text=True, check=True)
    for command in ("doctor", "status", "logs", "cancel", "clean", "nodes", "bench"):
        assert command in done.stdout
