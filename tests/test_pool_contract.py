"""The local pool as ProcessPoolExecutor has it: the full signature, worker recycling, no lost wake-up at shutdown,
no submit once the interpreter is exiting, the parent's authkey in workers, multiprocessing objects in
``initargs``, task log records in the client's logging, and nothing on stderr after a good run.

Real processes only: client scripts run as subprocesses where the point is what the interpreter or stderr does.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from clustrix_futures import ClusterPoolExecutor, ConfigError, ExecutorBrokenError

WAIT = 60  # seconds: generous bound for one result on a busy 2-core machine
ROOT = str(Path(__file__).resolve().parent.parent)


def run_script(tmp_path: Path, body: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=tmp_path, **kwargs)


# ------------------------------------------------------------------ the signature


def remember(value):
    global REMEMBERED
    REMEMBERED = value


def pid_and_state(_):
    return os.getpid(), REMEMBERED


def test_the_full_positional_signature_recycles_each_worker_after_one_task():
    with ClusterPoolExecutor(2, multiprocessing.get_context("spawn"), remember, (1,), max_tasks_per_child=1) as ex:
        assert ex._max_workers == 2
        seen = [f.result(WAIT) for f in [ex.submit(pid_and_state, i) for i in range(20)]]
    assert {state for _, state in seen} == {1}, "the initializer ran in every worker"
    assert len({pid for pid, _ in seen}) == 20, "20 tasks in 20 distinct worker processes"


def test_max_tasks_per_child_keeps_a_worker_for_that_many_tasks():
    with ClusterPoolExecutor(1, initializer=remember, initargs=(2,), max_tasks_per_child=3) as ex:
        pids = [ex.submit(pid_and_state, i).result(WAIT)[0] for i in range(7)]
    assert [len({*pids[i:i + 3]}) for i in (0, 3, 6)] == [1, 1, 1]
    assert len(set(pids)) == 3


def test_max_workers_defaults_as_the_stdlib_and_is_exposed():
    with ClusterPoolExecutor() as ex:
        assert ex._max_workers == (os.cpu_count() or 1)


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError),
                                               (True, TypeError)])
def test_max_tasks_per_child_is_validated_as_the_stdlib_does(value, error):
    with pytest.raises(error, match="max_tasks_per_child"):
        ClusterPoolExecutor(1, max_tasks_per_child=value)


def test_a_fork_context_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="fresh interpreters") as info:
        ClusterPoolExecutor(1, multiprocessing.get_context("fork"))
    assert isinstance(info.value, ConfigError)
    with pytest.raises(TypeError, match="mp_context"):
        ClusterPoolExecutor(1, "spawn")


def test_a_forkserver_context_is_accepted():
    with ClusterPoolExecutor(1, multiprocessing.get_context("forkserver")) as ex:
        assert ex.submit(pow, 2, 3).result(WAIT) == 8


def fail_to_initialize():
    raise RuntimeError("no GPU here")


def test_a_failing_initializer_breaks_the_pool_for_its_tasks_and_later_submits():
    with ClusterPoolExecutor(1, None, fail_to_initialize) as ex:
        with pytest.raises(ExecutorBrokenError, match="no GPU here"):
            ex.submit(pow, 2, 3).result(WAIT)
        with pytest.raises(ExecutorBrokenError):
            ex.submit(pow, 2, 3)


# ------------------------------------------------------------------ 12a: no lost wake-up


def test_shutdown_right_after_submit_and_cancel_never_blocks():
    blocked = 0
    for _ in range(100):
        ex = ClusterPoolExecutor(max_workers=1)
        ex.submit(int).result(WAIT)  # a warm, idle worker: the manager waits in its loop
        ex.submit(time.sleep, 0).cancel()
        waiter = threading.Thread(target=ex.shutdown, daemon=True)
        waiter.start()
        waiter.join(10)
        blocked += waiter.is_alive()
    assert blocked == 0, f"shutdown blocked {blocked} times in 100"


def test_submit_after_shutdown_raises():
    ex = ClusterPoolExecutor(max_workers=1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(int)


# ------------------------------------------------------------------ 12b: submit while the interpreter exits


def test_submit_through_the_executor_after_the_interpreter_began_exiting_is_refused(tmp_path):
    done = run_script(tmp_path, """
        import threading, time
        from clustrix_futures import ClusterPoolExecutor

        ex = ClusterPoolExecutor(max_workers=1)

        def late():
            time.sleep(1)
            try:
                ex.submit(int)
            except RuntimeError as exc:
                print("refused:", exc, flush=True)

        threading.Thread(target=late).start()
    """, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: cannot schedule new futures after interpreter shutdown" in done.stdout


# ------------------------------------------------------------------ 12e, 12f: multiprocessing objects


def put_in(proxy, value):
    proxy.append(value)
    return value in proxy


def test_manager_proxies_passed_to_tasks_work():
    with multiprocessing.Manager() as manager:
        shared = manager.list()
        with ClusterPoolExecutor(2) as ex:
            assert all(f.result(WAIT) for f in [ex.submit(put_in, shared, i) for i in range(4)])
        assert sorted(shared) == [0, 1, 2, 3]


QUEUE = None


def keep(queue, lock, event):
    global QUEUE
    QUEUE = queue, lock, event


def report(value):
    queue, lock, event = QUEUE
    with lock:
        queue.put((os.getpid(), value))
    return event.is_set()


def test_inheritance_only_multiprocessing_objects_in_initargs_are_handed_over_at_start():
    ctx = multiprocessing.get_context("spawn")
    queue, lock, event = ctx.Queue(), ctx.Lock(), ctx.Event()
    event.set()
    with ClusterPoolExecutor(2, ctx, keep, (queue, lock, event), max_tasks_per_child=2) as ex:
        assert all(f.result(WAIT) for f in [ex.submit(report, i) for i in range(6)])
    got = sorted(queue.get(timeout=WAIT) for _ in range(6))
    assert sorted(value for _, value in got) == [0, 1, 2, 3, 4, 5]
    assert len({pid for pid, _ in got}) >= 3, "recycled workers got them too"


def test_objects_of_a_fork_context_in_initargs_are_refused_with_the_reason():
    fork_queue = multiprocessing.get_context("fork").Queue()
    with pytest.raises(TypeError, match="spawn") as info:
        ClusterPoolExecutor(1, None, keep, (fork_queue, None, None))
    assert "fresh interpreter" in str(info.value)


# ------------------------------------------------------------------ point 7: task logging


def test_task_log_records_reach_the_clients_logging_configuration(tmp_path):
    done = run_script(tmp_path, """
        import logging
        from clustrix_futures import ClusterPoolExecutor

        logging.basicConfig(level=logging.INFO, format="FMT %(name)s %(levelname)s %(message)s")
        logging.getLogger("quiet").setLevel(logging.ERROR)

        def task(x):
            logging.getLogger("mine.task").info("working on %s", x)
            logging.getLogger("mine.task").debug("not shown %s", x)
            logging.getLogger("quiet").warning("not shown either")
            logging.warning("root warning %d", x)
            logging.getLogger("mine.task").info("with an extra", extra={"thing": lambda: 0})
            try:
                1 / 0
            except ZeroDivisionError:
                logging.getLogger("mine.task").exception("caught")
            return x

        with ClusterPoolExecutor(max_workers=1) as ex:
            assert ex.submit(task, 7).result() == 7
    """)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "FMT mine.task INFO working on 7" in lines
    assert "FMT root WARNING root warning 7" in lines
    assert "FMT mine.task ERROR caught" in lines
    assert "FMT mine.task INFO with an extra" in lines
    assert "ZeroDivisionError: division by zero" in lines
    assert "not shown" not in done.stderr


# ------------------------------------------------------------------ point 6: no noise on stderr


TWO_TASKS = """
    import sys
    from clustrix_futures import ClusterPoolExecutor

    with ClusterPoolExecutor() as ex:
        assert ex.submit(pow, 2, 3).result() == 8
        assert ex.submit(pow, 2, 4).result() == 16
        {extra}
    print("done", flush=True)
"""


@pytest.mark.parametrize("extra", ["pass", "ex.shutdown(cancel_futures=True)"])
def test_a_successful_run_writes_nothing_to_stderr(tmp_path, extra):
    for run in range(20):
        done = run_script(tmp_path, TWO_TASKS.format(extra=extra), timeout=60)
        assert done.returncode == 0 and done.stdout == "done\n", done.stderr
        assert done.stderr == "", f"run {run}: {done.stderr}"


def test_a_killed_client_leaves_nothing_on_stderr(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent("""
        import time
        from clustrix_futures import ClusterPoolExecutor

        ex = ClusterPoolExecutor(2)
        assert ex.submit(pow, 2, 3).result() == 8
        futures = [ex.submit(time.sleep, 0.5) for _ in range(4)]
        print("ready", flush=True)
        time.sleep(60)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    for how in (signal.SIGKILL, signal.SIGTERM):
        client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env, cwd=tmp_path)
        assert client.stdout.readline() == "ready\n"
        client.send_signal(how)
        client.wait(30)
        err = client.stderr.read()  # EOF only once every worker holding the pipe has gone
        assert err == "", err
