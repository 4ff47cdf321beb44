"""A scheduler for hosts that have none: runs array elements as local processes, under a detached supervisor.

The ``ssh`` backend runs its commands through this module on the host (the SSH host, or this machine), with
whatever ``python3`` is there: it imports the standard library only. Usage::

    python -m clustrix_futures.node.host_supervisor launch RUN BATCH START SIZE THROTTLE SCRIPT \
        STDOUT_PATTERN STDERR_PATTERN
    python -m clustrix_futures.node.host_supervisor status RUN JOBID...
    python -m clustrix_futures.node.host_supervisor final RUN JOBID
    python -m clustrix_futures.node.host_supervisor cancel RUN JOBID_INDEX...

``launch`` starts a supervisor in its own session (stdio on /dev/null, so an SSH channel closes at once),
waits until it has recorded itself, prints the job id and exits: ``host-BATCH`` for a batch's first launch,
``host-BATCH.N`` for later ones (an element run again). The supervisor runs ``bash SCRIPT`` for elements
START..START+SIZE-1 in order, each in its own process group with ``CLUSTRIX_ARRAY_INDEX``
set and its stdout/stderr appended to the patterns (``%a`` in their file names replaced by the index), at most
THROTTLE at a time; THROTTLE 0 means the number of CPUs this process may use (``ProcessPoolExecutor``'s
default), per array. It exits when every element has ended. (A host whose systemd-logind kills a user's
processes when their last session ends, ``KillUserProcesses=yes``, needs ``loginctl enable-linger``.)
Its files, under ``RUN/host/BATCH[.N]/``::

    job         FIRST LAST THROTTLE BOOT_ID SUPERVISOR_PID SUPERVISOR_START
    lock        flock()ed around every change of an element's state (by the supervisor and by ``cancel``)
    I.state     one line, replaced atomically: RUNNING PID START | COMPLETED ... | FAILED ... | KILLED ... |
                CANCELLED ...; no file means QUEUED

A process is identified by pid, start time (``/proc/PID/stat``) and boot id, so a reused pid or a reboot is
never taken for a live element. An element recorded as queued or running whose process and supervisor are both
gone (supervisor killed, host rebooted) is reported ``LOST``. ``status`` prints the queued and running
elements (``JOBID_INDEX STATE``, or ``JOBID_FIRST-LAST STATE`` for a run of indices); ``final`` prints the ended
ones with a detail. ``cancel`` marks queued elements CANCELLED (the supervisor skips them) and sends running
ones SIGTERM to their process group, then SIGKILL after :data:`KILL_GRACE` seconds (from a detached helper).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Optional

INDEX_PLACEHOLDER = "%a"
INDEX_VARIABLE = "CLUSTRIX_ARRAY_INDEX"
KILL_GRACE = 5.0
LIVE = ("QUEUED", "RUNNING")
_JOB = re.compile(r"host-(\d+(?:\.\d+)?)")


class Job(NamedTuple):
    """A launch's ``job`` file: its elements, throttle and supervisor."""

    first: int
    last: int
    limit: int
    boot: str
    supervisor: int
    supervisor_start: str


def job_directory(run: str, job: str) -> Optional[str]:
    """Where job ``host-3`` or ``host-3.1`` keeps its files; None if ``job`` is not one of our job ids."""
    found = _JOB.fullmatch(job)
    return os.path.join(run, "host", found.group(1)) if found else None


def split_element(name: str) -> Optional[tuple[str, int, int]]:
    """``host-3_7`` to ``("host-3", 7, 7)``, ``host-3_5-9`` to ``("host-3", 5, 9)``; None if malformed."""
    job, _, indices = name.rpartition("_")
    first, _, last = indices.partition("-")
    if not _JOB.fullmatch(job) or not first.isdigit() or not (last or first).isdigit():
        return None
    return job, int(first), int(last or first)


# ---------------------------------------------------------------- files and processes

def read_job(directory: str) -> Optional[Job]:
    words = (_read(os.path.join(directory, "job")) or "").split()
    if len(words) != len(Job._fields):
        return None
    return Job(int(words[0]), int(words[1]), int(words[2]), words[3], int(words[4]), words[5])


def _state_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"{index}.state")


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as source:
            return source.read().strip()
    except FileNotFoundError:
        return None


def _write(path: str, text: str) -> None:
    """Replace ``path`` atomically: a new file under a random name (created exclusively, never through a
    symlink), renamed over it."""
    temporary = f"{path}.{os.urandom(8).hex()}.tmp"
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "w") as out:
        out.write(text + "\n")
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id") or "-"


def _stat(pid: int) -> Optional[tuple[str, str]]:
    """(state letter, start time) of a process; ``("?", "-")`` where there is no /proc; None if none."""
    try:
        with open(f"/proc/{pid}/stat") as source:
            fields = source.read().rpartition(")")[2].split()
        return fields[0], fields[19]
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?", "-"


def _alive(pid: int, start: str, boot: str) -> bool:
    """Whether the process recorded as (pid, start time, boot id) still runs: not a zombie, not a reused pid."""
    stat = _stat(pid)
    return boot == _boot_id() and stat is not None and stat[0] not in "ZX" and stat[1] == start


def _cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _detach(work: Callable[[Callable[[], None]], None]) -> bytes:
    """Run ``work(ready)`` in a grandchild in its own session with stdio on /dev/null; return once it called
    ``ready()`` (answering b"ready") or failed (an error message, or b"" if it died)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)

                answered = []

                def ready() -> None:
                    os.write(write_end, b"ready")
                    os.close(write_end)
                    answered.append(True)

                try:
                    work(ready)
                except BaseException as exc:
                    if not answered:
                        os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as answer:
        return answer.read()


# ---------------------------------------------------------------- the supervisor

def _log(pattern: str, index: int) -> str:
    """The pattern with the placeholder replaced in its file name (a directory may contain ``%a``)."""
    head, tail = os.path.split(pattern)
    return os.path.join(head, tail.replace(INDEX_PLACEHOLDER, str(index)))


def _start(index: int, script: str, stdout: str, stderr: str) -> subprocess.Popen:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    out = os.open(_log(stdout, index), flags, 0o600)
    err = os.open(_log(stderr, index), flags, 0o600)
    try:
        return subprocess.Popen(["bash", script], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env={**os.environ, INDEX_VARIABLE: str(index)}, start_new_session=True)
    finally:
        os.close(out)
        os.close(err)


def _ending(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"KILLED signal {-code} ({signal.Signals(-code).name})"
        return f"KILLED signal {-code}"
    return f"{'COMPLETED' if code == 0 else 'FAILED'} exit code {code}"


def supervise(directory: str, job: Job, script: str, stdout: str, stderr: str) -> None:
    """Run the elements in order, at most ``job.limit`` at once; record each start and end under the lock."""
    pending = iter(range(job.first, job.last + 1))
    running: dict[int, tuple[int, subprocess.Popen]] = {}
    while True:
        while len(running) < job.limit:
            index = next(pending, None)
            if index is None:
                break
            with _locked(directory):
                if os.path.exists(_state_path(directory, index)):  # cancelled while queued
                    continue
                try:
                    process = _start(index, script, stdout, stderr)
                except OSError as exc:
                    _write(_state_path(directory, index), f"FAILED could not start bash {script}: {exc}")
                    continue
                stat = _stat(process.pid)
                _write(_state_path(directory, index), f"RUNNING {process.pid} {stat[1] if stat else '-'}")
            running[process.pid] = (index, process)
        if not running:
            return
        pid, status = os.wait()
        if pid not in running:
            continue
        index, process = running.pop(pid)
        process.returncode = os.waitstatus_to_exitcode(status)
        with _locked(directory):
            if not (_read(_state_path(directory, index)) or "").startswith("CANCELLED"):
                _write(_state_path(directory, index), _ending(status))


def launch(run: str, batch: int, first: int, size: int, throttle: int, script: str, stdout: str,
           stderr: str) -> str:
    os.makedirs(os.path.join(run, "host"), mode=0o700, exist_ok=True)
    for attempt in itertools.count():  # a new directory (and job id) per launch: mkdir is the atomic claim
        name = str(batch) if attempt == 0 else f"{batch}.{attempt}"
        directory = os.path.join(run, "host", name)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
            break

    def work(ready: Callable[[], None]) -> None:
        stat = _stat(os.getpid())
        job = Job(first, first + size - 1, throttle or _cpus(), _boot_id(), os.getpid(), stat[1] if stat else "-")
        _write(os.path.join(directory, "job"), " ".join(map(str, job)))
        ready()
        with contextlib.suppress(FileNotFoundError):  # the run directory was removed under us
            supervise(directory, job, script, stdout, stderr)

    answer = _detach(work)
    if answer != b"ready":
        raise RuntimeError(f"the supervisor did not start: {answer.decode(errors='replace') or 'it died'}")
    return f"host-{name}"


# ---------------------------------------------------------------- queries

def element_states(run: str, job_id: str) -> dict[int, tuple[str, str]]:
    """Every element's (STATE, detail), with queued or running elements of a vanished supervisor LOST."""
    directory = job_directory(run, job_id)
    job = read_job(directory) if directory else None
    if directory is None or job is None:
        return {}
    supervisor_alive: Optional[bool] = None
    names = set(os.listdir(directory))
    states = {}
    for index in range(job.first, job.last + 1):
        path = _state_path(directory, index)
        text = (_read(path) if f"{index}.state" in names else None) or "QUEUED"
        word, _, detail = text.partition(" ")
        if word == "RUNNING":
            pid, _, start = detail.partition(" ")
            if _alive(int(pid), start, job.boot):
                states[index] = (word, detail)
                continue
        if word in LIVE:
            if supervisor_alive is None:
                supervisor_alive = _alive(job.supervisor, job.supervisor_start, job.boot)
            if not supervisor_alive:  # anything it wrote before it ended is on disk now: read again
                word, _, detail = (_read(path) or "QUEUED").partition(" ")
                if word in LIVE:
                    where = f" (pid {detail.split()[0]})" if word == "RUNNING" else ""
                    word, detail = "LOST", (f"the supervisor (pid {job.supervisor}) ended while the element was "
                                            f"{word.lower()}{where}: killed, or the host rebooted")
        states[index] = (word, detail)
    return states


def status(run: str, jobs: Sequence[str]) -> list[str]:
    """The queued and running elements of ``jobs``, runs of consecutive indices in one state on one line."""
    lines = []
    for job in jobs:
        spans: list[list] = []  # [first, last, state]
        for index, (word, _) in sorted(element_states(run, job).items()):
            if word not in LIVE:
                continue
            if spans and spans[-1][2] == word and spans[-1][1] == index - 1:
                spans[-1][1] = index
            else:
                spans.append([index, index, word])
        lines += [f"{job}_{first}{'' if last == first else f'-{last}'} {word}" for first, last, word in spans]
    return lines


def final(run: str, job: str) -> list[str]:
    states = element_states(run, job)
    return [f"{job}_{index} {word} {detail}".rstrip() for index, (word, detail) in sorted(states.items())
            if word not in LIVE]


def cancel(run: str, elements: Sequence[str]) -> None:
    wanted: dict[str, list[int]] = {}
    for name in elements:
        parsed = split_element(name)
        if parsed is not None:
            wanted.setdefault(parsed[0], []).extend(range(parsed[1], parsed[2] + 1))
    groups = []
    for job_id, indices in wanted.items():
        directory = job_directory(run, job_id)
        job = read_job(directory) if directory else None
        if directory is None or job is None:
            continue
        with _locked(directory):  # one lock for the job: the supervisor starts none of these meanwhile
            for index in indices:
                path = _state_path(directory, index)
                word, _, detail = (_read(path) or "QUEUED").partition(" ")
                if word == "QUEUED" and job.first <= index <= job.last:
                    _write(path, "CANCELLED while queued")
                elif word == "RUNNING":
                    pid, _, start = detail.partition(" ")
                    if _alive(int(pid), start, job.boot):
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(int(pid), signal.SIGTERM)
                            groups.append(int(pid))
                    _write(path, f"CANCELLED while running (pid {pid})")
    if groups:
        def kill_later(ready: Callable[[], None]) -> None:
            ready()
            time.sleep(KILL_GRACE)
            for group in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)

        _detach(kill_later)


USAGE = """usage: python -m clustrix_futures.node.host_supervisor
  launch RUN BATCH START SIZE THROTTLE SCRIPT STDOUT_PATTERN STDERR_PATTERN
  status RUN JOBID...
  final RUN JOBID
  cancel RUN JOBID_INDEX..."""


def main(argv: Sequence[str]) -> None:
    command, arguments = (argv[0], list(argv[1:])) if argv else ("", [])
    try:
        _run(command, arguments)
    except (OSError, RuntimeError) as exc:
        sys.exit(f"clustrix_futures.node.host_supervisor {command}: {exc}")


def _run(command: str, arguments: list[str]) -> None:
    if command == "launch" and len(arguments) == 8 and all(a.isdigit() for a in arguments[1:5]) \
            and int(arguments[3]) > 0:
        run, batch, first, size, throttle, script, stdout, stderr = arguments
        print(launch(run, int(batch), int(first), int(size), int(throttle), script, stdout, stderr))
    elif command == "status" and arguments:
        print("\n".join(status(arguments[0], arguments[1:])))
    elif command == "final" and len(arguments) == 2:
        print("\n".join(final(*arguments)))
    elif command == "cancel" and arguments:
        cancel(arguments[0], arguments[1:])
    else:
        sys.exit(USAGE)


if __name__ == "__main__":
    main(sys.argv[1:])
