"""Small functions the tests submit.

Imported as ``support.workloads``: local workers import it by reference (they get the client's sys.path); for
cluster backends the top-level package ``support`` is the user's own code (not installed), so its modules travel
by value, as ``workloads`` did before it moved here.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from clustrix_futures import Checkpointable


class CustomError(Exception):
    pass


class Unreturnable(Exception):
    """Cannot travel: an attribute (a lock) does not pickle (its two-argument __init__ alone would not stop it)."""

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(f"{a}/{b}")
        self.guard = threading.Lock()


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def echo(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    return args, kwargs


def fail_at(x: int, bad: int) -> int:
    if x == bad:
        raise CustomError(f"item {x} is bad")
    return x


def fail_at_7(x: int) -> int:
    return fail_at(x, 7)


def raise_custom(message: str) -> None:
    raise CustomError(message)


def raise_unreturnable() -> None:
    raise Unreturnable(1, 2)


def return_lock() -> Any:
    return threading.Lock()


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def wait_for_file(path: str, timeout: float = 60.0) -> str:
    """Block until ``path`` exists: lets a test hold a worker busy for exactly as long as it needs."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)
    return path


def touch_then_wait(started: str, release: str) -> str:
    Path(started).touch()
    return wait_for_file(release)


def die(code: int = 3) -> None:
    os._exit(code)


def pid() -> int:
    return os.getpid()


_initialized: list = []


def initialize(value: Any) -> None:
    _initialized.append(value)


def initialized() -> list:
    return list(_initialized)


def square_after(release: str, x: int) -> int:
    """Square x once ``release`` exists."""
    wait_for_file(release, 90)
    return x * x


def square_and_record(directory: str, x: int) -> int:
    """Square x, and record that it ran (:func:`record_run`)."""
    record_run(directory, x)
    return x * x


def record_run(directory: str, x: int) -> None:
    """Record a run of task ``x``: a line appended to ``ran-X`` in ``directory`` (:func:`runs_recorded` counts)."""
    with open(Path(directory, f"ran-{x}"), "a") as record:
        record.write(f"{os.getpid()}\n")


def gated_record(directory: str, gate: str, x: int) -> int:
    """Wait for the file ``gate`` (if one is named), then ``square_and_record(directory, x)``."""
    if gate:
        wait_for_file(gate)
    return square_and_record(directory, x)


def runs_recorded(directory: Any) -> dict[int, int]:
    """How often each ``square_and_record(directory, x)`` ran, by x."""
    return {int(p.name[4:]): len(p.read_text().splitlines()) for p in Path(directory).glob("ran-*")}


def value_after(value: Any, seconds: float, release: str = "") -> Any:
    """``value`` after ``seconds``, or as soon as the file ``release`` exists (a test ends a long item so)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (release and Path(release).exists()):
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return value


def block_at(x: int, bad: int, started: str, release: str) -> int:
    """``x`` at once, except item ``bad``: it touches ``started``, then waits for ``release``."""
    if x == bad:
        touch_then_wait(started, release)
    return x


class Box:
    """A result that can be weakly referenced."""

    def __init__(self, value: Any) -> None:
        self.value = value


def make_box(value: Any) -> Box:
    return Box(value)


def allocate_logged(megabytes: int, log_dir: str, task: int, seconds: float = 0.0) -> int:
    """Record a run of ``task`` in ``log_dir`` (:func:`record_run`), wait ``seconds``, then hold ``megabytes`` of
    memory; returns them."""
    record_run(log_dir, task)
    time.sleep(seconds)
    held = bytearray(megabytes * 1024 * 1024)  # bytearray(n) writes its n zero bytes: the pages are really used
    return len(held) // (1024 * 1024)


def slow_once(log_dir: str, task: int, seconds: float) -> int:
    """Record a run of ``task`` in ``log_dir`` (:func:`record_run`); sleep ``seconds`` unless an earlier run of it
    was recorded; ``task``."""
    earlier = Path(log_dir, f"ran-{task}").exists()
    record_run(log_dir, task)
    if not earlier:
        time.sleep(seconds)
    return task


class CountSeconds(Checkpointable):
    """Counts ``seconds`` one second at a time, its count kept on ``self``: a checkpoint (the default hook)
    resumes the count where it stood. Each run is recorded (:func:`record_run`, as task ``task``); returns the
    count and how many runs it took."""

    def __init__(self, log_dir: str, task: int) -> None:
        self.log_dir, self.task, self.done, self.runs = log_dir, task, 0, 0

    def __call__(self, seconds: int) -> tuple[int, int]:
        self.runs += 1
        record_run(self.log_dir, self.task)
        while self.done < seconds:
            time.sleep(1)
            self.done += 1
        return self.done, self.runs
