"""Loading a task payload on the node (:func:`loads_task`): module state as after an import, and tracebacks that
name the user's file and line.

**One namespace per by-value module.** cloudpickle rebuilds a function shipped by value (defined in ``__main__``,
a notebook, or a module registered by value) with ``_make_function(code, base_globals, ...)``, where
``base_globals`` is a dict made per pickle holding the module's ``__name__`` (and ``__file__``...), and then
``_function_setstate``, which ``update``s that dict with the globals the function uses, as pickled. Each payload's
functions would get their own copy of their module's globals: what an initializer stored there, a task never sees.
The client's pickler (``serialization.dumps_task``) names this module's :func:`make_function` and
:func:`function_setstate` in their place: a function of module ``M`` gets this process's one namespace of ``M``
(made on first use, kept for the life of the process; never the worker's own ``__main__``), and its pickled
globals fill only the names that namespace does not hold yet: what the worker already holds (set by the
initializer or an earlier task) wins over values that arrive pickled later, as with an imported module. (So a
payload loads with the C unpickler: a ``find_class`` hook in Python made every task's load twice as slow.)

**Functions sent once.** A payload's function may be a blob of its own, a pickle followed by its sources (the
client sends one for a function whose pickle cannot change, ``serialization.function_blob``): the function it
holds is made on the first task that carries it and kept for the life of the process, so later tasks of it cost
one dictionary lookup instead of its rebuild.

**Sources.** A payload may be followed by a second, plain pickle (written by the client's
``serialization.dumps_task``): its *sources*, ``(names, lines)``. ``names`` is a tuple of ``(co_name,
co_firstlineno, filename)``, one per code object of the functions shipped by value (nested ones too); ``lines``
a tuple of ``(filename, ((lineno, text), ...))``, the lines of those functions. cloudpickle 3.1.2 and later
write ``<dynamic-code>`` as every such code's file name: the functions this payload made get their file name
back (recursively, nested code included), and the lines go into :mod:`linecache`, so a traceback formatted here
shows ``File "/path/prog.py", line 9, in work`` and the line, even where that file does not exist.

Standard library and cloudpickle only.
"""

from __future__ import annotations

import functools
import io
import linecache
import pickle
import threading
import types
from collections.abc import Callable
from typing import Any, Optional

NAMESPACES: dict[str, dict[str, Any]] = {}  # module name -> this process's one namespace of that by-value module
_KEPT = ("__package__", "__name__", "__path__", "__file__")
_LINES: dict[str, dict[int, str]] = {}  # file name -> the source lines received for it
_RESTORED: dict[bytes, dict[tuple[str, int], str]] = {}  # a sources pickle read -> its functions' file names
_FUNCTIONS: dict[bytes, tuple[Any, bytes]] = {}  # a function's blob -> the function made from it, its sources


def namespace_of(base_globals: dict[str, Any]) -> dict[str, Any]:
    """The process's namespace of the module ``base_globals`` names (itself if it names none)."""
    name = base_globals.get("__name__")
    if not isinstance(name, str):
        return base_globals
    shared = NAMESPACES.setdefault(name, {})
    for key in _KEPT:
        if key in base_globals:
            shared.setdefault(key, base_globals[key])
    return shared


def make_function(code: types.CodeType, base_globals: dict[str, Any], name: Optional[str],
                  argdefs: Optional[tuple], closure: Optional[tuple]) -> types.FunctionType:
    """cloudpickle's ``_make_function``, but the function's globals are its module's shared namespace."""
    shared = namespace_of(base_globals)
    shared["__builtins__"] = __builtins__
    function = types.FunctionType(code, shared, name, argdefs, closure)
    _made().append(function)
    return function


def function_setstate(function: types.FunctionType, state: Any) -> None:
    """cloudpickle's ``_function_setstate``, but a name the function's shared namespace already holds keeps
    its value."""
    _, slotstate = state
    held = function.__globals__
    if held.get("__name__") in NAMESPACES and NAMESPACES[held["__name__"]] is held:
        slotstate["__globals__"] = {k: v for k, v in slotstate["__globals__"].items() if k not in held}
    _cloudpickle_setstate()(function, state)


@functools.cache
def _cloudpickle_setstate() -> Callable[[types.FunctionType, Any], None]:
    """cloudpickle's own ``_function_setstate`` (in ``cloudpickle.cloudpickle`` from 3.0, ``cloudpickle_fast``
    before)."""
    from cloudpickle import cloudpickle

    if hasattr(cloudpickle, "_function_setstate"):
        return cloudpickle._function_setstate
    from cloudpickle import cloudpickle_fast

    return cloudpickle_fast._function_setstate


_loading = threading.local()  # .made: the functions the payload being loaded in this thread has rebuilt


def _made() -> list[types.FunctionType]:
    if not hasattr(_loading, "made"):
        _loading.made = []
    return _loading.made


def loads_task(payload: bytes) -> Any:
    """The call a task payload holds (``(fn, args, kwargs)``), its functions in their modules' shared
    namespaces, and its sources (if any) restored. A function sent as a blob of its own (the client's
    ``serialization.function_blob``) is made once per process and kept."""
    (fn, args, kwargs), _ = _loads(payload)
    if type(fn) is bytes:
        fn = _function_of(fn)
    return fn, args, kwargs


def _loads(data: bytes) -> tuple[Any, bytes]:
    """The object a pickle followed by its sources (if any) holds, and those sources' pickle."""
    stream, made = io.BytesIO(data), _made()
    made.clear()
    loaded = pickle.Unpickler(stream).load()
    rest = stream.read()
    if rest:
        rename(made, _restored(rest))
    made.clear()
    return loaded, rest


def _restored(rest: bytes) -> dict[tuple[str, int], str]:
    """The sources pickle ``rest`` read into :mod:`linecache` (again if it has lost them); its functions' file
    names."""
    files = _RESTORED.get(rest)  # the tasks of one function carry the same sources: read them once
    if files is None or not all(name in linecache.cache for name in files.values() if name in _LINES):
        if len(_RESTORED) > 1024:
            _RESTORED.clear()
        files = _RESTORED[rest] = restore_sources(pickle.loads(rest))
    return files


def _function_of(blob: bytes) -> Any:
    """The function a blob holds, made on its first task in this process."""
    known = _FUNCTIONS.get(blob)
    if known is None:
        if len(_FUNCTIONS) > 256:
            _FUNCTIONS.clear()
        known = _FUNCTIONS[blob] = _loads(blob)
    elif known[1]:
        _restored(known[1])
    return known[0]


def restore_sources(sources: tuple) -> dict[tuple[str, int], str]:
    """Put the source lines into :mod:`linecache`; the file name of each function's code, by its
    ``(co_name, co_firstlineno)``."""
    names, lines = sources
    for filename, numbered in lines:
        if not numbered:
            continue
        known = _LINES.setdefault(filename, {})
        if filename in linecache.cache and all(known.get(number) == line for number, line in numbered):
            continue  # a later task of the same functions: nothing new
        known.update(numbered)
        text = [""] * max(known)
        for number, line in known.items():
            text[number - 1] = line
        linecache.cache[filename] = (sum(map(len, text)), None, text, filename)  # no mtime: never checked
    return {(name, first): filename for name, first, filename in names}


def rename(functions: list[types.FunctionType], files: dict[tuple[str, int], str]) -> None:
    """Give ``functions`` their code's file names back (cloudpickle 3.1.2 and later ship none)."""
    for function in functions:
        code = function.__code__
        if files.get((code.co_name, code.co_firstlineno), code.co_filename) != code.co_filename:
            function.__code__ = _renamed(code, files)  # nested code was compiled with it: renamed only then


def _renamed(code: types.CodeType, files: dict[tuple[str, int], str]) -> types.CodeType:
    """``code`` with its file name (and its nested code's) as ``files`` gives them."""
    consts = tuple(_renamed(c, files) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    filename = files.get((code.co_name, code.co_firstlineno), code.co_filename)
    if filename == code.co_filename and all(a is b for a, b in zip(consts, code.co_consts)):
        return code
    return code.replace(co_filename=filename, co_consts=consts)
