"""Loading task payloads on the node (clustrix_futures.node.loading), without infrastructure: one namespace per
by-value module, what the worker holds wins, and tracebacks get their file name and source lines back."""

from __future__ import annotations

import linecache
import subprocess
import sys
import textwrap
import traceback
import types
from pathlib import Path

import pytest

from clustrix_futures.node import loading
from clustrix_futures.node.initializer import initialized
from clustrix_futures.serialization import dumps_task, function_blob

MODULE = "cf_loading_user_module"  # never importable: cloudpickle ships its functions by value


@pytest.fixture
def user_module(tmp_path: Path) -> dict[str, object]:
    """A user's module (a file, as a script's __main__ would be), loaded under a name no import can find."""
    path = tmp_path / "user_prog.py"
    path.write_text(textwrap.dedent("""\
        LIMIT = None
        STATE = {}

        def init(limit, scale):
            global LIMIT
            LIMIT = limit
            STATE["scale"] = scale

        def work(x):
            return min(x * STATE["scale"], LIMIT)

        def fail(x):
            inner = lambda: {}[x]  # noqa: E731
            return inner()
    """))
    namespace: dict[str, object] = {"__name__": MODULE, "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    yield namespace
    loading.NAMESPACES.pop(MODULE, None)


def test_tasks_of_one_module_share_its_namespace_and_the_worker_s_values_win(user_module):
    """The payload names the node's hooks, so the C unpickler (no ``find_class`` of ours) loads it."""
    assert b"clustrix_futures.node.loading" in dumps_task(user_module["work"], (2,), {})
    init = loading.loads_task(dumps_task(user_module["init"], (10, 3), {}))
    fn, args, kwargs = init
    fn(*args, **kwargs)
    work, args, _ = loading.loads_task(dumps_task(user_module["work"], (2,), {}))
    assert work(*args) == 6  # STATE arrived pickled empty, LIMIT as None: the worker's values won
    assert work(5) == 10
    assert work.__globals__ is fn.__globals__ is loading.NAMESPACES[MODULE]


def test_without_the_shared_loading_the_initializer_state_is_lost(user_module):
    """The problem the loading solves (cloudpickle's own hooks): this test fails if cloudpickle changes."""
    import pickle

    import cloudpickle

    fn, args, _ = pickle.loads(cloudpickle.dumps((user_module["init"], (10, 3), {})))
    fn(*args)
    work, args, _ = pickle.loads(cloudpickle.dumps((user_module["work"], (2,), {})))
    with pytest.raises(KeyError):
        work(*args)


def test_a_raising_initializer_turns_the_element_s_tasks_into_broken_executor_errors(user_module):
    from clustrix_futures.errors import ExecutorBrokenError

    payload = dumps_task(user_module["fail"], ("key",), {})
    tasks = initialized([(4, b"ignored"), (5, b"ignored")], payload, "0-3")
    assert [task_id for task_id, _ in tasks] == [4, 5]
    fn, args, kwargs = loading.loads_task(tasks[0][1])
    with pytest.raises(ExecutorBrokenError, match=r"(?s)array element 0-3.*KeyError: 'key'"):
        fn(*args, **kwargs)
    assert initialized([(1, b"x")], None, "0-0") == [(1, b"x")]


def test_the_traceback_shows_the_file_and_line_where_the_file_does_not_exist(user_module, tmp_path):
    """The sources travel with the payload: the node reads neither the file nor the client's linecache."""
    payload = dumps_task(user_module["fail"], ("key",), {})
    Path(user_module["__file__"]).unlink()
    code = ("import sys, traceback; from clustrix_futures.node.loading import loads_task\n"
            "fn, args, kwargs = loads_task(sys.stdin.buffer.read())\n"
            "try:\n    fn(*args, **kwargs)\nexcept KeyError as exc:\n"
            "    print(''.join(traceback.format_exception(exc)))\n")
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=True).stdout
    text = out.decode()
    assert f'File "{user_module["__file__"]}", line 14, in fail' in text, text
    assert f'File "{user_module["__file__"]}", line 13, in <lambda>' in text, text
    assert "inner = lambda: {}[x]  # noqa: E731" in text and "return inner()" in text, text


def test_code_named_dynamic_code_gets_its_file_name_back():
    """cloudpickle 3.1.2 and later write ``<dynamic-code>`` as the file name of code shipped by value."""
    source = "def outer():\n    def inner():\n        raise ValueError('deep')\n    return inner()\n"
    namespace: dict[str, object] = {}
    exec(compile(source, "<dynamic-code>", "exec"), namespace)
    outer = namespace["outer"]
    assert isinstance(outer, types.FunctionType)
    filename = "/nowhere/prog.py"
    names = (("outer", 1, filename), ("inner", 2, filename))
    lines = ((filename, tuple(enumerate(source.splitlines(keepends=True), start=1))),)
    loading.rename([outer], loading.restore_sources((names, lines)))
    try:
        with pytest.raises(ValueError) as caught:
            outer()
        text = "".join(traceback.format_exception(caught.value))
        assert f'File "{filename}", line 3, in inner' in text and "raise ValueError('deep')" in text, text
        assert f'File "{filename}", line 4, in outer' in text and "return inner()" in text, text
    finally:
        linecache.cache.pop(filename, None)
        loading._LINES.pop(filename, None)


def test_a_call_without_by_value_functions_is_cloudpickle_s_own_pickle(user_module):
    import pickle

    import cloudpickle

    call = (len, ([1, 2],), {})
    assert dumps_task(*call) == cloudpickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
    assert loading.loads_task(dumps_task(*call)) == call
    with_sources = dumps_task(user_module["work"], (1,), {})
    assert len(with_sources) > len(cloudpickle.dumps((user_module["work"], (1,), {}), protocol=pickle.HIGHEST_PROTOCOL))


def test_a_function_whose_pickle_cannot_change_is_sent_as_one_blob_and_made_once(tmp_path):
    """A plain function whose globals are modules and scalars travels as the same blob while they are the same
    objects; the node makes it on its first task only. What may change in place is pickled afresh each time."""
    path = tmp_path / "blob_prog.py"
    path.write_text(textwrap.dedent("""\
        import math
        SCALE = 3
        TABLE = {"scale": 3}

        def pure(x):
            return math.floor(x * SCALE)

        def calls_pure(x):
            return pure(x)

        def reads_table(x):
            return x * TABLE["scale"]

        def remembers(x, seen=[]):
            seen.append(x)
            return len(seen)

        def curried(k):
            return lambda x: x * k
    """))
    name = "cf_loading_blob_module"
    namespace: dict[str, object] = {"__name__": name, "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    try:
        blob = function_blob(namespace["pure"], False)
        assert blob is not None and blob is function_blob(namespace["pure"], False)
        first, second = dumps_task(namespace["pure"], (2,), {}), dumps_task(namespace["pure"], (5,), {})
        assert blob in first and blob in second
        (made, args, _), (again, more, _) = loading.loads_task(first), loading.loads_task(second)
        assert made is again and made(*args) == 6 and again(*more) == 15
        namespace["SCALE"] = 4  # another object: a new blob (the node's namespace still holds 3: its value wins)
        assert function_blob(namespace["pure"], False) not in (None, blob)
        for changeable in ("calls_pure", "reads_table", "remembers"):
            assert function_blob(namespace[changeable], False) is None, changeable
        assert function_blob(namespace["curried"](2), False) is None  # a closure
        assert function_blob(len, False) is None
        table_task = dumps_task(namespace["reads_table"], (2,), {})
        namespace["TABLE"]["scale"] = 5  # changed in place: the next task carries the new value
        assert dumps_task(namespace["reads_table"], (2,), {}) != table_task
    finally:
        loading.NAMESPACES.pop(name, None)


def test_a_blob_function_s_traceback_keeps_its_file_and_line(tmp_path):
    path = tmp_path / "blob_fail.py"
    path.write_text("import math\n\n\ndef fails(x):\n    return math.sqrt(x)  # the failing line\n")
    namespace: dict[str, object] = {"__name__": "cf_loading_blob_fail", "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    try:
        payload = dumps_task(namespace["fails"], (-1,), {})
        assert function_blob(namespace["fails"], False) in payload
        path.unlink()  # the lines come from the payload's sources, as on a node without the file
        for _ in range(2):  # made on the first task, kept for the second
            linecache.clearcache()
            fn, args, _ = loading.loads_task(payload)
            with pytest.raises(ValueError) as raised:
                fn(*args)
            text = "".join(traceback.format_exception(raised.value))
            assert f'File "{path}", line 5, in fails' in text and "# the failing line" in text
    finally:
        loading.NAMESPACES.pop("cf_loading_blob_fail", None)
