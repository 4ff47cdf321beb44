"""Waiting on a positive signal, with a bound against hangs (never a performance assertion).

A test that asserts something did NOT happen first waits here for something that shows the system had its
chance (a file a task touched, a monitor cycle, a state change), never on a bare sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

RESULT_WAIT = 120.0  # seconds: a generous bound for one result on a busy 2-core CI machine

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = RESULT_WAIT, what: str = "", pause: float = 0.05) -> T:
    """Poll ``condition`` until it is truthy and return its value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what or condition}"
        time.sleep(pause)
