"""One local pool worker process, as the pool's manager thread sees it (see :mod:`clustrix_futures.local.pool`).

A worker is ``sys.executable -m clustrix_futures.node.worker pool FD``, started with ``subprocess``: a fresh
interpreter, as with multiprocessing's "spawn". Its first frame carries this process's ``sys.path``, its
multiprocessing authkey, its loggers' levels and the initializer (:class:`Start`); the descriptors the
initializer's multiprocessing objects need are passed to it under the same numbers.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Optional

import clustrix_futures
from clustrix_futures.future import ClusterFuture
from clustrix_futures.local import logs

Entry = tuple[ClusterFuture, bytes]
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(clustrix_futures.__file__)))


class Start:
    """What every worker of a pool starts with: the initializer pickled with what it is handed
    (:func:`~clustrix_futures.local.handover.dumps_at_start`), and those descriptors. ``keep`` holds the
    initializer and its arguments, whose descriptors must stay open while workers may start."""

    def __init__(self, initializer: Optional[Callable[..., Any]], initargs: tuple, forward_output: bool) -> None:
        self.forward_output = forward_output
        self.keep = (initializer, initargs)
        self.payload: Optional[bytes] = None
        self.fds: list[int] = []
        if initializer is not None:
            from clustrix_futures.local.handover import dumps_at_start

            self.payload, self.fds = dumps_at_start((initializer, tuple(initargs), {}))


class Worker:
    """A running worker: its process, its connection, whether it said it is ready, the task it runs, and how
    many tasks it has finished (``done``)."""

    def __init__(self, start: Start) -> None:
        import multiprocessing

        parent_end, child_end = socket.socketpair()
        output = None if start.forward_output else subprocess.DEVNULL
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
        with child_end:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clustrix_futures.node.worker", "pool", str(child_end.fileno())],
                pass_fds=[child_end.fileno(), *start.fds], env=env, stdin=subprocess.DEVNULL,
                stdout=output, stderr=output)
        self.conn = Connection(parent_end.detach())
        self.sentinel: Optional[int] = os.pidfd_open(self.process.pid) if hasattr(os, "pidfd_open") else None
        authkey = bytes(multiprocessing.current_process().authkey)
        self.conn.send_bytes(pickle.dumps((sys.path, authkey, logs.levels(), start.payload)))
        self.ready = False
        self.running: Optional[Entry] = None
        self.done = 0

    def describe_death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return f"worker pid {self.process.pid} closed its connection"
        if code < 0:
            try:
                return f"worker pid {self.process.pid} was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"worker pid {self.process.pid} was killed by signal {-code}"
        return f"worker pid {self.process.pid} exited with code {code}"

    def close(self) -> None:
        self.conn.close()
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None
