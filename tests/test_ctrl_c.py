"""Ctrl-C in a client on the real SLURM: SIGINT to a client subprocess, the queue checked with squeue.

The first SIGINT (while the client waits on a result inside ``with ClusterPoolExecutor(backend="slurm")``)
withdraws the queued elements and leaves the ``with`` block at once, printing the run directory and the
commands on stderr; the running elements stay. The second SIGINT cancels those too."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from support.waiting import RESULT_WAIT, wait_until

TESTS = Path(__file__).parent


def queue(job_name: str) -> dict[str, str]:
    """This job name's array elements still in squeue: element -> state."""
    out = subprocess.run(["squeue", "--noheader", "--array", f"--name={job_name}", "--format=%i %T"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def client(tmp_path: Path, job_name: str, where: str) -> subprocess.Popen:
    """A client that submits 6 one-minute tasks, at most 2 elements at a time (so 4 stay queued), prints its
    run directory, waits on the last result, and after a KeyboardInterrupt out of its ``with`` block says so
    and sleeps (so a second Ctrl-C can reach it); ``where`` is what it does then: "wait" or "sleep"."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from support import workloads
        from clustrix_futures import ClusterPoolExecutor
        try:
            with ClusterPoolExecutor(2, backend="slurm", work_dir={str(tmp_path / "runs")!r},
                                     tasks_per_element=1, job_name={job_name!r}) as ex:
                futures = [ex.submit(workloads.sleep_then, 60, i) for i in range(6)]
                print(ex.run_dir, flush=True)
                if {where!r} == "wait":
                    futures[-1].result()
        except KeyboardInterrupt:
            print("left the with block", flush=True)
            time.sleep(300)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def interrupt_twice(tmp_path: Path, where: str) -> None:
    job_name = f"cf-ctrl-c-{secrets.token_hex(3)}"
    process = client(tmp_path, job_name, where)
    try:
        assert process.stdout is not None and process.stderr is not None
        run_dir = process.stdout.readline().strip()
        assert run_dir, process.stderr.read()
        running = wait_until(lambda: sorted(k for k, v in queue(job_name).items() if v == "RUNNING")
                             if len(queue(job_name)) >= 3 and "RUNNING" in queue(job_name).values() else None,
                             what="two elements running, the rest queued")
        assert len(running) == 2
        process.send_signal(signal.SIGINT)
        assert process.stdout.readline().strip() == "left the with block"
        assert sorted(queue(job_name)) == running  # the queued elements are gone, the running ones remain
        assert all(state == "RUNNING" for state in queue(job_name).values())
        process.send_signal(signal.SIGINT)
        process.wait(RESULT_WAIT)
        err = process.stderr.read()
        wait_until(lambda: not queue(job_name), what="the running elements cancelled too")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        subprocess.run(["scancel", f"--name={job_name}"], check=False)
    assert process.returncode != 0  # ended by the second KeyboardInterrupt
    assert f"run directory: {run_dir}" in err and f"clustrix-futures cancel {run_dir}" in err
    assert f"ClusterPoolExecutor.attach('{run_dir}')" in err
    assert "4 queued elements cancelled; 2 running elements keep running" in err
    assert "second Ctrl-C: cancelling the running elements too" in err
    assert Path(run_dir, "manifest.json").exists()  # kept: it can be taken over or cancelled


def test_ctrl_c_while_waiting_on_a_result(slurm, tmp_path):
    interrupt_twice(tmp_path, "wait")


def test_ctrl_c_in_the_shutdown_wait_of_the_with_block(slurm, tmp_path):
    interrupt_twice(tmp_path, "sleep")
