"""The engine protocol: what runs an executor's payloads (local processes, the debug backend, or a scheduler's
run), and which engine the settings ask for (:func:`make_engine`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional, Protocol

from clustrix_futures import config
from clustrix_futures.future import ClusterFuture
from clustrix_futures.remote.files import RemoteFiles
from clustrix_futures.runfiles.layout import RunDir
from clustrix_futures.serialization import dumps_task

if TYPE_CHECKING:
    from clustrix_futures.engine.submission import JobScript


class Engine(Protocol):
    """What runs payloads: the local pool (:class:`~clustrix_futures.local.pool.LocalPool`) or the cluster
    engine (:class:`~clustrix_futures.engine.session.ClusterEngine`). ``submit`` must return quickly; the rest
    happens in the engine's own thread. Every method may be called from any thread."""

    ships_code: bool  # whether the user's own modules must travel by value

    @property
    def futures(self) -> list[ClusterFuture]:
        """The futures of the run an engine attached to, in submission order; empty for a new run."""

    @property
    def run_dir(self) -> Optional[RunDir]:
        """The run directory, on the cluster's filesystem or in S3; None when payloads use no files."""

    @property
    def command_counts(self) -> dict[str, int]:
        """How many times each scheduler command (or API call) has run; empty without a scheduler."""

    def submit(self, payload: bytes, resources: Optional[Mapping[str, Any]] = None,
               packable: bool = True) -> ClusterFuture:
        """Queue a payload. ``packable=False``: a map chunk already sized to run alone in an element."""

    def chunk_sizes(self, total: Optional[int], fn: Callable[..., Any]) -> Iterator[int]:
        """The sizes of successive map chunks of ``fn`` over ``total`` items (None: not known)."""

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """As ``Executor.shutdown``: no new work after it; ``wait`` for the outstanding work, or not."""

    def files(self) -> RemoteFiles:
        """Filesystem helpers where the tasks run."""

    def job_script(self, resources: Optional[Mapping[str, Any]]) -> JobScript:
        """The submission command and batch script of the next array; raises ConfigError without a scheduler."""


def ships_code(settings: config.Settings) -> bool:
    """Whether the engine of these settings ships the user's own modules by value (every one but local and debug
    processes, which import them), as its ``ships_code`` says; the initializer's payload is made before it."""
    return settings.backend not in ("local", "debug")


def make_engine(settings: config.Settings, initializer: Optional[Callable[..., Any]], initargs: tuple) -> Engine:
    """The engine of these settings; local processes pickle the initializer at each worker's start (handover),
    the others here, once."""
    if settings.backend == "local":
        from clustrix_futures.local.pool import LocalPool

        return LocalPool(settings.max_workers, initializer, tuple(initargs), settings["forward_output"] is not False,
                         settings.max_tasks_per_child)
    payload = None if initializer is None else dumps_task(initializer, initargs, {}, ships_code(settings))
    if settings.backend == "debug":
        from clustrix_futures.local.debug import DebugEngine

        return DebugEngine(payload)
    from clustrix_futures.engine.session import ClusterEngine

    return ClusterEngine(settings, payload)
