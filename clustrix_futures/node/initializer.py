"""The run's initializer in an array element: :func:`initialized` runs it once, before the element's first task.

The client writes ``RUN/initializer.pkl`` (:attr:`~clustrix_futures.runfiles.layout.RunDir.initializer`) once per
run: the task payload of ``initializer(*initargs)``. It is loaded as tasks are
(:func:`clustrix_futures.node.loading.loads_task`), so what it stores in a by-value module (``__main__``...) is
what the element's tasks see. If it raises, every task of the element fails with
:class:`~clustrix_futures.errors.ExecutorBrokenError` carrying the initializer's traceback: each task's payload is
replaced by one that raises it (:func:`broken_executor`), and it is journalled as any raising task is.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import NoReturn, Optional

from clustrix_futures.node.loading import loads_task


def initialized(tasks: Sequence[tuple[int, bytes]], initializer: Optional[bytes],
                where: str) -> list[tuple[int, bytes]]:
    """Run ``initializer`` (a task payload; None: the run has none) before ``tasks``: the tasks to run, which
    raise the broken-executor error if it raised. ``where`` names the element in that error."""
    if initializer is None or not tasks:
        return list(tasks)
    try:
        fn, args, kwargs = loads_task(initializer)
        fn(*args, **kwargs)
    except BaseException:
        import traceback

        text = f"the initializer raised in array element {where}:\n{traceback.format_exc()}"
        broken = pickle.dumps((broken_executor, (text,), {}), protocol=pickle.HIGHEST_PROTOCOL)
        return [(task_id, broken) for task_id, _ in tasks]
    return list(tasks)


def broken_executor(message: str) -> NoReturn:
    """What a task of an element whose initializer raised runs instead."""
    from clustrix_futures.errors import ExecutorBrokenError

    raise ExecutorBrokenError(message)


def read_initializer(path: str) -> Optional[bytes]:
    """The initializer file at ``path`` on this machine's filesystem; None if the run has none."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None
