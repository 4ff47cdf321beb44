"""Exceptions and results that test how failures travel back (tests/test_conformance_exceptions.py).

Imported as ``support.raising``: by reference on the local pool, by value on cluster backends (like
``support.workloads``).
"""

from __future__ import annotations

import sys
from typing import Any


class TwoArgs(ValueError):
    """Its ``__init__`` takes other arguments than ``args``: pickle's default round trip cannot rebuild it."""

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(f"{a}-{b}")
        self.a = a


def raise_two_args(a: Any, b: Any) -> None:
    """Raise TwoArgs(a, b), caused by a KeyError and with a note."""
    try:
        {}[a]
    except KeyError as missing:
        error = TwoArgs(a, b)
        error.add_note(f"note {a}")
        raise error from missing


def two_args_at_3(x: int) -> int:
    if x == 3:
        raise TwoArgs(x, "three")
    return x


class ExitOnLoad:
    """Pickles on the node; unpickling it (on the client) raises SystemExit."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.exit, ("ExitOnLoad was unpickled",))


class InterruptOnLoad:
    """Pickles on the node; its ``__setstate__`` (on the client) raises KeyboardInterrupt."""

    def __getstate__(self) -> dict[str, Any]:
        return {"state": 1}

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise KeyboardInterrupt("InterruptOnLoad was unpickled")


def exit_on_load(x: int = 0) -> Any:
    return ExitOnLoad() if x == 1 else x


def interrupt_on_load() -> InterruptOnLoad:
    return InterruptOnLoad()


def failing_initializer() -> None:
    raise RuntimeError("the initializer fails on purpose")
