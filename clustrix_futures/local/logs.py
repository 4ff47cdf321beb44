"""The client's side of task log forwarding on the local pool (the worker's side: ``clustrix_futures.node.logs``).

:func:`levels` is what a worker is started with: the level of each logger of this process that has one of its
own, so the worker makes only the records this process would show. :func:`handle` gives a forwarded record to
this process's logger of the same name, whose handlers (and its ancestors', as ``propagate`` says) format and
write it, with the level, logger name, message and the worker's pid (``%(process)d``) it was made with.
"""

from __future__ import annotations

import logging
import pickle


def levels() -> tuple[dict[str, int], int]:
    """The own levels of this process's loggers by name (``""``: the root's), and its ``logging.disable`` level."""
    named = {name: logger.level for name, logger in list(logging.root.manager.loggerDict.items())
             if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET}
    return {"": logging.root.level, **named}, logging.root.manager.disable


def handle(frame: bytes) -> None:
    """Hand one forwarded record (a ``LOG`` frame's body, pickled by our worker) to its logger here."""
    record = logging.makeLogRecord(pickle.loads(frame))
    logger = logging.getLogger(None if record.name == "root" else record.name)
    logger.handle(record)
