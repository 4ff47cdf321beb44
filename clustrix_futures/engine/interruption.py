"""Ctrl-C in a client of a scheduler backend: what the first and the second ``KeyboardInterrupt`` do.

The first (raised out of the ``with`` block, or into ``shutdown``'s wait) must not leave the user waiting for
every queued job, as a plain ``shutdown(wait=True)`` would: the engine cancels the elements not yet started,
stops waiting, and the executor leaves; this module prints (on stderr) the run directory and the commands that
cancel the rest, follow it or take it over (:func:`interrupted_message`). Running elements are left to finish:
their results land in the run directory, which is kept, and the monitor still resolves their futures while the
process lives.

A second Ctrl-C cancels those too: :class:`SecondInterrupt` is a SIGINT handler installed by the first (in the
main thread only, where Python runs signal handlers), which cancels the running elements and then raises
``KeyboardInterrupt`` as the default handler would; a second Ctrl-C that comes while the first is still being
handled is kept and acted on as soon as that is done. Once it has fired, the previous handler is back.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Optional


def interrupted_message(root: str, cancelled: int, running: int, options: dict[str, Any]) -> str:
    """What the first Ctrl-C prints: what was cancelled, what runs on, and the commands for the run ``root``."""
    site = "".join(f" --{name.replace('_', '-')} {shlex.quote(str(options[name]))}"
                   for name in ("host",) if options.get(name))
    quoted = shlex.quote(root)
    keeps = (f"{running} running element{'s' if running != 1 else ''} keep running (Ctrl-C again cancels "
             f"{'them' if running != 1 else 'it'} too)" if running else "no element was running")
    return (f"clustrix-futures: interrupted: {cancelled} queued element{'s' if cancelled != 1 else ''} "
            f"cancelled; {keeps}.\n"
            f"  run directory: {root}\n"
            f"  cancel the rest:  clustrix-futures cancel{site} {quoted}\n"
            f"  follow it:        clustrix-futures status{site} {quoted}\n"
            f"  take it over:     ClusterPoolExecutor.attach({root!r})\n")


class SecondInterrupt:
    """The SIGINT handler of the time after a first Ctrl-C (see the module docstring). ``cancel`` cancels the
    running elements; it is called at most once."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel = cancel
        self._handling = True  # the first Ctrl-C is still being handled
        self._pending = False  # a second one came meanwhile
        self._fired = False
        self._previous: Any = None
        self._installed = False
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except ValueError:  # not the main interpreter
                pass

    def handled(self) -> None:
        """The first Ctrl-C has been handled: act on a second one that came meanwhile."""
        self._handling = False
        if self._pending:
            self._fire()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self._handling:
            self._pending = True
            return
        self._fire()
        raise KeyboardInterrupt

    def _fire(self) -> None:
        if self._fired:
            return
        self._fired = True
        self._restore()
        print("clustrix-futures: second Ctrl-C: cancelling the running elements too", file=sys.stderr, flush=True)
        self._cancel()

    def _restore(self) -> None:
        if self._installed and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
