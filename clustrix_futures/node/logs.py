"""A local pool worker's log records, forwarded to the client, whose handlers format and write them.

The worker's root logger gets one handler, :class:`Forward`, and every logger the levels the client's loggers
had when the worker started (:func:`install`), so a record is made in the worker only when the client would
show it. A record travels as a ``LOG`` frame on the worker's socket: its attributes pickled, the message already
formatted with its arguments (``getMessage()``), an exception already rendered as ``exc_text``. The client
hands it to the logger of the same name (see ``clustrix_futures.local.logs``).

Only the local pool forwards: an array element's records go to its stderr (its ``.err`` log).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping

LOG = b"L"
_PLAIN = (str, int, float, bool, type(None))  # exact types: no subclass (an IntEnum) needs its class


class Forward(logging.Handler):
    """Sends each record as a ``LOG`` frame through ``send`` (which returns False once the client is gone)."""

    def __init__(self, send: Callable[[bytes], bool]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(LOG + encode_record(record))
        except Exception:
            self.handleError(record)


def encode_record(record: logging.LogRecord) -> bytes:
    """The record's attributes pickled: the message formatted, an exception rendered, and any other value that
    is not a string, number, bool or None (an ``extra=`` object) as its ``repr``, so that the client unpickles
    plain data only."""
    data = dict(record.__dict__)
    data["msg"], data["args"] = record.getMessage(), None
    if record.exc_info:
        data["exc_text"] = data.get("exc_text") or logging.Formatter().formatException(record.exc_info)
    data["exc_info"] = None
    plain = {k: v if type(v) in _PLAIN else repr(v) for k, v in data.items()}
    return pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL)


def install(levels: Mapping[str, int], disabled: int, send: Callable[[bytes], bool]) -> None:
    """Forward every record of this process to the client; ``levels`` are the client's loggers' own levels by
    name (``""``: the root's), ``disabled`` its ``logging.disable`` level."""
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    logging.disable(disabled)
    logging.root.addHandler(Forward(send))
