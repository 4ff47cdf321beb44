"""How exceptions and outcomes travel (runfiles/travel.py, runfiles/outcomes.py), node and client in one process.

The node's side is :func:`travelling_exception` and :func:`encode_outcome`; the client's is :func:`loads_outcome`
and :func:`exception_of`, exactly as the backends call them (the backends' own tests are in
tests/test_conformance_exceptions.py).
"""

from __future__ import annotations

import concurrent.futures as cf
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from clustrix_futures.errors import ClusterFuturesError, ExecutorBrokenError, RemoteError
from clustrix_futures.runfiles.outcomes import (
    ChunkResult,
    RemoteTraceback,
    encode_outcome,
    exception_of,
    loads_outcome,
    travelling_exception,
    unpack_items,
)
from clustrix_futures.runfiles.travel import Carrier

INITS = 0


class TwoArgs(ValueError):
    def __init__(self, a: Any, b: Any) -> None:
        global INITS
        INITS += 1
        super().__init__(f"{a}-{b}")
        self.a = a


class DefaultedArg(Exception):
    """Pickle's round trip "works" but changes args: ``DefaultedArg("1-0")`` has args ``("1-0-0",)``."""

    def __init__(self, a: Any, b: Any = 0) -> None:
        super().__init__(f"{a}-{b}")


class Locked(Exception):
    def __init__(self) -> None:
        super().__init__("locked")
        self.guard = threading.Lock()


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def round_trip(exc: BaseException) -> BaseException:
    """The exception as the client gets it from a failed outcome of the node."""
    travelled, text = travelling_exception(raised(exc))
    return exception_of(loads_outcome(encode_outcome((False, travelled, text, 0.0))[1]))


def test_an_exception_whose_init_takes_other_arguments_is_rebuilt_without_calling_it():
    before = INITS
    back = round_trip(TwoArgs(1, 2))
    assert before + 1 == INITS  # the node's raise only: neither the node's check nor the client called __init__
    assert type(back) is TwoArgs and back.args == ("1-2",) and back.a == 1
    assert isinstance(back.__cause__, RemoteTraceback) and "TwoArgs" in back.__cause__.text


def test_a_round_trip_that_changes_args_is_not_trusted():
    back = round_trip(DefaultedArg(1))
    assert type(back) is DefaultedArg and back.args == ("1-0",)


def test_an_exception_that_pickles_travels_as_itself():
    error = ValueError("plain")
    travelled, _ = travelling_exception(raised(error))
    assert travelled is error


def test_causes_contexts_and_notes_come_back_and_the_remote_traceback_ends_the_chain():
    try:
        try:
            {}["k"]
        except KeyError:
            raise TwoArgs(3, 4) from OSError(2, "gone")
    except TwoArgs as error:
        error.add_note("a note")
        back = round_trip(error)
    assert type(back) is TwoArgs and back.__notes__ == ["a note"]
    cause = back.__cause__
    assert type(cause) is FileNotFoundError and cause.errno == 2 and cause.strerror == "gone"
    assert isinstance(cause.__cause__, RemoteTraceback) and "TwoArgs(3, 4) from OSError" in cause.__cause__.text
    try:
        try:
            {}["k"]
        except KeyError:
            raise TwoArgs(5, 6)  # noqa: B904  (the implicit context is what this checks)
    except TwoArgs as error:
        back = round_trip(error)
    assert type(back.__context__) is KeyError and back.__context__.args == ("k",)
    assert isinstance(back.__context__.__cause__, RemoteTraceback)


def test_a_long_chain_is_carried_only_so_deep():
    from clustrix_futures.runfiles.travel import CHAIN_DEPTH

    error: BaseException = ValueError(0)
    for level in range(1, 30):
        try:
            raise TwoArgs(level, "x") from error
        except TwoArgs as caught:
            error = caught
    back, links = round_trip(error), 0
    while not isinstance(back.__cause__, RemoteTraceback):
        assert back.__cause__ is not None
        back, links = back.__cause__, links + 1
    assert links == CHAIN_DEPTH and type(back) is TwoArgs


def test_what_truly_cannot_travel_is_a_remote_error_saying_why():
    back = round_trip(Locked())
    assert type(back) is RemoteError and back.type_name == f"{__name__}.Locked" and back.message == "locked"
    assert "lock" in back.reason and "Locked" in back.traceback
    assert pickle.loads(pickle.dumps(back)).reason == back.reason


def test_a_class_the_client_cannot_import_is_a_remote_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "only_on_the_node.py").write_text(
        "class NodeOnly(Exception):\n    def __init__(self, a, b):\n        super().__init__(a + b)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_on_the_node  # type: ignore[import-not-found]

    travelled, text = travelling_exception(raised(only_on_the_node.NodeOnly("x", "y")))
    assert isinstance(travelled, Carrier)
    encoded = encode_outcome((False, travelled, text, 0.0))[1]
    monkeypatch.delitem(sys.modules, "only_on_the_node")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    back = exception_of(loads_outcome(encoded))
    assert type(back) is RemoteError and back.type_name == "only_on_the_node.NodeOnly" and back.message == "xy"
    assert "ModuleNotFoundError" in back.reason


class ExitOnLoad:
    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.exit, ("unpickled",))


class InterruptOnLoad:
    def __getstate__(self) -> dict[str, int]:
        return {"x": 1}

    def __setstate__(self, state: dict[str, int]) -> None:
        raise KeyboardInterrupt("unpickled")


@pytest.mark.parametrize("value, name", [(ExitOnLoad(), "SystemExit"), (InterruptOnLoad(), "KeyboardInterrupt")])
def test_a_result_whose_unpickling_raises_a_base_exception_is_a_failed_outcome(value: Any, name: str):
    ok, error, text, _ = loads_outcome(encode_outcome((True, value, "", 0.0))[1])
    assert not ok and type(error) is RemoteError and error.type_name == name
    assert "could not be unpickled here" in str(error) and name in text


def test_an_exception_whose_unpickling_raises_system_exit_is_a_remote_error_not_an_exit():
    error = TwoArgs(1, 2)
    error.payload = ExitOnLoad()  # type: ignore[attr-defined]
    back = round_trip(error)  # the node's checks unpickle it: SystemExit must not end the worker there either
    assert type(back) is RemoteError and back.type_name == f"{__name__}.TwoArgs" and "SystemExit" in back.reason


def test_a_chunk_whose_values_raise_system_exit_on_unpickling_fails_its_first_item():
    chunk = ChunkResult([0, ExitOnLoad(), 2], {}, 0.1)
    back = loads_outcome(encode_outcome((True, chunk, "", 0.1))[1])[1]
    with pytest.raises(RemoteError, match="SystemExit") as caught:
        list(unpack_items(back))
    assert isinstance(caught.value.__cause__, RemoteTraceback)


def test_something_else_than_an_outcome_is_a_failed_outcome():
    import cloudpickle

    ok, error, _, _ = loads_outcome(cloudpickle.dumps(("not", "an", "outcome")))
    assert not ok and type(error) is RemoteError and "not a task's outcome" in str(error)


def test_the_broken_executor_error_is_a_broken_executor():
    error = ExecutorBrokenError("the initializer raised")
    assert isinstance(error, cf.BrokenExecutor) and isinstance(error, ClusterFuturesError)
    assert isinstance(error, RuntimeError)
    with pytest.raises(cf.BrokenExecutor):
        raise error
