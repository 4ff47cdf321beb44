"""``ClusterPoolExecutor``: the ``concurrent.futures.Executor`` users see.

It pickles each call at ``submit`` (so bad input fails there, loudly), hands the payload to an *engine* —
the local process pool, or the scheduler machinery (batcher, backend, transport, monitor) — and returns a
:class:`~clustrix_futures.future.ClusterFuture`. The engine owns everything after that.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

from clustrix_futures import config
from clustrix_futures.engines import Engine, make_engine
from clustrix_futures.future import ClusterFuture
from clustrix_futures.mapping.feeder import Feeders
from clustrix_futures.mapping.run import map_in_chunks
from clustrix_futures.mapping.sizing import map_sizes
from clustrix_futures.remote.files import RemoteFiles
from clustrix_futures.serialization import dumps_task

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from clustrix_futures.engine.submission import JobScript
    from clustrix_futures.tools.report import RunReport

T = TypeVar("T")


class ClusterPoolExecutor(Executor):
    """An executor whose tasks run on local processes or as jobs on a cluster.

    ``ClusterPoolExecutor()`` is a drop-in for ``ProcessPoolExecutor``; ``profile="hpc"`` (or
    ``CLUSTRIX_FUTURES_PROFILE=hpc``) or ``backend="slurm", ...`` moves the same code to a cluster. Options
    are listed in ``clustrix_futures.config.OPTIONS`` (the Configuration page); an unknown one raises
    ``ConfigError``.

    Args:
        max_workers: Local processes: the number of worker processes (default ``os.cpu_count()``). Scheduler
            backends: the most array elements alive at once (the array throttle); unset, the scheduler
            decides. Must be a positive integer (``ValueError`` otherwise, as the stdlib's). ``_max_workers``
            is the value given, or ``os.cpu_count()`` (as ``ProcessPoolExecutor``'s; on a scheduler without
            ``max_workers`` only a hint for code that sizes work to the pool).
        mp_context: A ``multiprocessing`` context, as ``ProcessPoolExecutor`` takes. Workers are always fresh
            interpreters, as with ``"spawn"``: a ``"spawn"`` or ``"forkserver"`` context is accepted (make the
            multiprocessing objects you hand the ``initializer`` from it); a ``"fork"`` context raises
            ``ConfigError`` (a ``ValueError``), since no worker is a fork of this process and code relying on
            what a fork inherits would silently see other values. Anything else: ``TypeError``.
        backend: ``"local"`` (the default), ``"slurm"``, ``"sge"``, ``"pbs"``, ``"ssh"`` or
            ``"kubernetes"``; overrides the profile's.
        profile: The name of a profile in the configuration file (default ``$CLUSTRIX_FUTURES_PROFILE``).
        initializer: Called as ``initializer(*initargs)`` in each local worker process, or once in each array
            element of a scheduler backend, before its first task; what it stores in a module shipped by value
            (``__main__``, a notebook) is seen by the tasks there. If it raises, the executor is broken:
            pending (that element's, on a scheduler) and later submissions fail with ``ExecutorBrokenError``.
        initargs: The arguments of ``initializer``. On local processes they are handed over at each worker's
            start, so ``multiprocessing`` queues, locks, events and ``Manager`` proxies of a ``"spawn"`` or
            ``"forkserver"`` context may be among them (those of a ``"fork"`` context: ``TypeError``).
        max_tasks_per_child: Local processes: a worker ends after this many tasks (a map chunk is one task)
            and a fresh one replaces it, as with ``ProcessPoolExecutor``. A positive integer (``TypeError``,
            ``ValueError`` otherwise, as the stdlib's).
        **options: Any option of ``clustrix_futures.config.OPTIONS`` (``work_dir``, ``cpus``, ``mem``,
            ``time``, ``host``...); they override the profile's.

    Raises:
        ConfigError: An unknown option, backend or profile, or a bad value; on a scheduler backend, also
            what the start of the run found unusable (the SSH host and its key, the interpreter on the
            cluster, the S3 bucket). Nothing has been submitted then. ``HostKeyError`` is its subclass for
            an SSH host key that is unknown or changed.

    A scheduler backend connects and starts its run directory in the constructor; the executor is then a
    context manager like any ``Executor``: leaving the ``with`` block calls ``shutdown(wait=True)``.

    Attributes:
        futures: After ``attach``, the attached run's futures in submission order; empty for a new executor
            (the futures ``submit`` returns are not collected here).
        settings: The resolved configuration: ``backend``, ``max_workers`` and the validated options.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        mp_context: Optional[BaseContext] = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: tuple = (),
        *,
        max_tasks_per_child: Optional[int] = None,
        backend: Optional[str] = None,
        profile: Optional[str] = None,
        **options: Any,
    ) -> None:
        self.settings = config.resolve(profile, backend, max_workers, options)
        config.check_mp_context(mp_context)
        self.settings.max_tasks_per_child = config.check_max_tasks_per_child(max_tasks_per_child)
        self._run_with(make_engine(self.settings, initializer, initargs))

    def _run_with(self, engine: Engine) -> None:
        self._engine = engine
        self._max_workers: int = self.settings.max_workers or os.cpu_count() or 1
        self.futures: list[ClusterFuture] = engine.futures  # an attached run's, else empty
        self._shutdown_lock = threading.Lock()
        self._shut_down = False
        self._feeders = Feeders()

    @classmethod
    def attach(cls, run_dir: str, **options: Any) -> ClusterPoolExecutor:
        """Take over the run directory of an executor in another process, which may have died.

        The returned executor's ``futures`` are that run's futures in submission order; results already
        written resolve at once, the others as their jobs end. Options given here (e.g. ``host`` and SSH
        keys when attaching from another machine) override those recorded in the run's manifest. New work
        may be submitted through it too.
        """
        from clustrix_futures.engine.session import ClusterEngine

        executor = cls.__new__(cls)
        executor.settings = config.Settings(str(options.pop("backend", "slurm")), None,
                                            config.validate_options(options))
        executor._run_with(ClusterEngine(executor.settings, None, attach_to=run_dir))
        return executor

    @property
    def run_dir(self) -> Optional[str]:
        """The run directory on the cluster's filesystem (None for local processes): what ``attach`` takes."""
        run = self._engine.run_dir
        return None if run is None else str(run.root)

    @property
    def files(self) -> RemoteFiles:
        """``ls``, ``find``, ``stat``, ``exists``, ``glob`` on the cluster, over this executor's connection."""
        return self._engine.files()

    @property
    def backend(self) -> str:
        """The backend this executor runs on: ``"local"``, ``"slurm"``, ``"sge"``, ``"pbs"``, ``"ssh"`` or
        ``"kubernetes"``."""
        return self.settings.backend

    def report(self) -> RunReport:
        """What this run did so far, as ``clustrix-futures report`` gives it (``.text()``, ``.as_json()``,
        ``.plot(path)``); ConfigError for local processes, which keep no run directory."""
        from clustrix_futures.errors import ConfigError
        from clustrix_futures.tools.report_command import report_of

        if self.run_dir is None:
            raise ConfigError("report() reads a run directory: local processes keep none")
        return report_of(self.settings, self.run_dir)

    @property
    def scheduler_commands(self) -> dict[str, int]:
        """How many times each scheduler command (sbatch, squeue...) has run; empty for local processes."""
        return dict(self._engine.command_counts)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> ClusterFuture[T]:
        """Submits a callable to be executed with the given arguments.

        Schedules the callable to be executed as ``fn(*args, **kwargs)`` and returns a future representing
        the execution of the callable. The call is pickled (cloudpickle) here, in the calling thread, so
        lambdas, closures and functions of ``__main__`` travel; on a scheduler backend, your own modules
        (those not installed) travel with it by value. Submissions close together are grouped into one
        array job.

        Returns:
            The future of the call, whose result is the call's return value, whose exception is the call's
                own exception (with the remote traceback as ``__cause__``), or a ``ClusterFuturesError`` when the
                machinery failed (``JobFailedError`` for a job or worker that ended without the outcome).

        Raises:
            TypeError: ``fn`` or an argument cannot be pickled; the message names which one.
            RuntimeError: The executor has been shut down.
            ExecutorBrokenError: The executor cannot run work any more (its initializer raised).
        """
        return self._submit(fn, args, kwargs, None)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: Union[int, str, None] = None,
        buffersize: Optional[int] = None,
        progress: bool = False,
    ) -> Iterator[T]:
        """Returns an iterator equivalent to ``map(fn, *iterables)``, the calls running on the executor.

        Items travel in chunks (one task per chunk) but results come back per item, in order: every item
        before a failing one is yielded, then that item's exception is raised. Chunks are submitted before
        ``map`` returns, as the stdlib does; closing the iterator cancels the chunks not started.

        Args:
            fn: A callable that takes as many arguments as there are iterables.
            timeout: The most seconds to wait for each result, counted from the call to ``map``; None
                waits without limit.
            chunksize: Items per task: a positive integer, or None / ``"auto"`` (the default) to size
                chunks automatically (local processes: balanced over the workers; scheduler backends: so
                that an array element runs about ``element_seconds``, learned from the function's measured
                item duration).
            buffersize: If given, at most this many input items are read ahead of the consumer (as
                Python 3.14's ``Executor.map``, on every supported Python); None reads the input as fast as
                chunks can be submitted.
            progress: Show a tqdm bar over the items as they are yielded (needs the ``progress`` extra).

        Returns:
            An iterator over the results of ``fn`` applied to the items of ``iterables``, in order.

        Raises:
            TimeoutError: A result is not available ``timeout`` seconds after the call to ``map``
                (raised by the iterator).
            Exception: The exception ``fn`` raised for an item, or a ``ClusterFuturesError`` for a chunk
                the machinery lost (raised by the iterator, at that item).
            TypeError: No iterable was given, or ``fn`` cannot be pickled (raised by ``map`` itself).
            ValueError: A bad ``chunksize`` or ``buffersize`` (raised by ``map`` itself).
            RuntimeError: The executor has been shut down.
        """
        return self._map(fn, iterables, timeout, chunksize, buffersize, None, progress)

    def job_script(self) -> JobScript:
        """The command line and batch script the next array job would be submitted with, without submitting
        anything or running any scheduler command (as dask-jobqueue's ``job_script()``): ``str()`` of it shows
        both; ``.argv``, ``.command`` and ``.script`` give each. ``ex.options(mem="64G").job_script()`` shows
        one with other resources. The array range is that of a one-element array. ``ConfigError`` on the
        local and debug backends (no scheduler) and on Kubernetes (no command)."""
        return self._engine.job_script(None)

    def options(self, **resources: Any) -> ResourceView:
        """A view that submits through this executor with other resources, e.g. ``ex.options(mem="64G")``.

        The view shares the executor's engine (same run directory, same job monitor, same shutdown); only the
        tasks submitted through it get the resources given here, which override the executor's. Tasks with
        different resources never share an array job.

        Raises:
            ConfigError: An unknown option or a bad value.
        """
        checked = config.validate_options(resources)
        if isinstance(checked.get("gpus"), str):  # a GPU type: only some schedulers take one
            from clustrix_futures.schedulers import check_resources

            check_resources(self.backend, checked)
        return ResourceView(self, checked)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Clean-up the resources associated with the executor.

        It is safe to call this method several times. Otherwise, no other methods can be called after this
        one: ``submit`` and ``map`` raise ``RuntimeError``. A ``map`` called before shutdown still submits
        all its chunks (unless ``cancel_futures``).

        Args:
            wait: If True, do not return until every pending future is done and the executor's resources
                (worker processes; the job monitor, the connection and, when every task succeeded, the run
                directory) have been freed. If False, return at once; the jobs already submitted still run
                and their futures still resolve while this process lives.
            cancel_futures: If True, cancel every future that has not started running (on a scheduler
                backend, its queued array elements are withdrawn from the scheduler's queue).
        """
        with self._shutdown_lock:
            self._shut_down = True
        if cancel_futures:
            self._feeders.stop()
        if wait or not self._feeders.active():
            try:
                self._feeders.join()  # maps called before shutdown still submit all their chunks
                self._engine.shutdown(wait=wait, cancel_futures=cancel_futures)
            except KeyboardInterrupt:
                self._interrupted()
                raise
            return

        def after_feeders() -> None:
            self._feeders.join()
            self._engine.shutdown(wait=False, cancel_futures=cancel_futures)

        threading.Thread(target=after_feeders, name="clustrix-futures-shutdown", daemon=True).start()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """Leave the ``with`` block: ``shutdown(wait=True)``; but after a ``KeyboardInterrupt`` on a scheduler
        backend, the queued elements are cancelled and the executor leaves without waiting for the running
        ones (the run directory and the commands to cancel or take over the rest are printed on stderr; a
        second Ctrl-C cancels the running elements too: :mod:`clustrix_futures.engine.interruption`)."""
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) and self._interrupted():
            return
        self.shutdown(wait=True)

    def _interrupted(self) -> bool:
        """Act on a first Ctrl-C if the engine knows how (the scheduler backends); False if it does not (the
        local pool handles Ctrl-C itself, in its shutdown)."""
        interrupt = getattr(self._engine, "interrupt", None)
        if interrupt is None:
            return False
        with self._shutdown_lock:
            self._shut_down = True
        self._feeders.stop()
        interrupt()
        return True

    # ------------------------------------------------------------------ shared by the resource views

    def _submit(self, fn: Callable[..., T], args: tuple, kwargs: dict[str, Any],
                resources: Optional[Mapping[str, Any]]) -> ClusterFuture[T]:
        payload = dumps_task(fn, args, kwargs, self._engine.ships_code)
        with self._shutdown_lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            return self._engine.submit(payload, resources)

    def _map(self, fn: Callable[..., T], iterables: tuple, timeout: Optional[float],
             chunksize: Union[int, str, None], buffersize: Optional[int],
             resources: Optional[Mapping[str, Any]], progress: bool = False) -> Iterator[T]:
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        sizes = map_sizes(chunksize, fn, iterables, self._engine.chunk_sizes)
        with self._shutdown_lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")

        def submit_chunk(payload: bytes) -> ClusterFuture:
            return self._engine.submit(payload, resources, packable=False)

        return map_in_chunks(submit_chunk, fn, iterables, sizes, timeout, buffersize, self._engine.ships_code,
                             self._feeders, progress, stream=chunksize is None or chunksize == "auto")


class ResourceView:
    """Submits through its executor (same engine, same monitor) with resources overridden.

    Returned by ``ClusterPoolExecutor.options(...)``; ``resources`` holds the validated options it overrides.
    It has no ``shutdown`` of its own: shutting the executor down ends it too.
    """

    def __init__(self, executor: ClusterPoolExecutor, resources: dict[str, Any]) -> None:
        self._executor = executor
        self.resources = resources

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> ClusterFuture[T]:
        """As ``ClusterPoolExecutor.submit``, with this view's resources."""
        return self._executor._submit(fn, args, kwargs, self.resources)

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: Union[int, str, None] = None, buffersize: Optional[int] = None,
            progress: bool = False) -> Iterator[T]:
        """As ``ClusterPoolExecutor.map``, with this view's resources."""
        return self._executor._map(fn, iterables, timeout, chunksize, buffersize, self.resources, progress)

    def job_script(self) -> JobScript:
        """As ``ClusterPoolExecutor.job_script``, with this view's resources."""
        return self._executor._engine.job_script(self.resources)
