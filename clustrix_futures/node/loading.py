"""Loading a task payload on the node (:func:`loads_task`): module state as after an import, and tracebacks that
name the user's file and line.

**One namespace per by-value module.** cloudpickle rebuilds a function shipped by value (defined in ``__main__``,
a notebook, or a module registered by value) with ``_make_function(code, base_globals, ...)``, where
``base_globals`` is a dict made per pickle holding the module's ``__name__`` (and ``__file__``...), and then
``_function_setstate``, which ``update``s that dict with the globals the function uses, as pickled. Each payload's
functions would get their own copy of their module's globals: what an initializer stored there, a task never sees.
:class:`TaskUnpickler` substitutes both hooks: a function of module ``M`` gets this process's one namespace of
``M`` (made on first use, kept for the life of the process; never the worker's own ``__main__``), and its pickled
globals fill only the names that namespace does not hold yet: what the worker already holds (set by the
initializer or an earlier task) wins over values that arrive pickled later, as with an imported module.

**Sources.** A payload may be followed by a second, plain pickle (written by the client's
``serialization.dumps_task``): its *sources*, ``(names, lines)``. ``names`` is a tuple of ``(co_name,
co_firstlineno, filename)``, one per code object of the functions shipped by value (nested ones too); ``lines``
a tuple of ``(filename, ((lineno, text), ...))``, the lines of those functions. cloudpickle 3.1.2 and later
write ``<dynamic-code>`` as every such code's file name: the functions this payload made get their file name
back (recursively, nested code included), and the lines go into :mod:`linecache`, so a traceback formatted here
shows ``File "/path/prog.py", line 9, in work`` and the line, even where that file does not exist.

Standard library and cloudpickle only; :mod:`linecache` is imported only for a payload that has sources.
"""

from __future__ import annotations

import io
import pickle
import types
from collections.abc import Callable
from typing import Any, Optional

NAMESPACES: dict[str, dict[str, Any]] = {}  # module name -> this process's one namespace of that by-value module
_HOOK_MODULES = ("cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast")  # where cloudpickle 2 and 3 keep them
_KEPT = ("__package__", "__name__", "__path__", "__file__")
_LINES: dict[str, dict[int, str]] = {}  # file name -> the source lines received for it


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


def keeping_held(setstate: Callable[[types.FunctionType, Any], None]) -> Callable[[types.FunctionType, Any], None]:
    """cloudpickle's ``_function_setstate``, but a name the function's shared namespace already holds keeps
    its value."""
    def function_setstate(function: types.FunctionType, state: Any) -> None:
        _, slotstate = state
        held = function.__globals__
        if held.get("__name__") in NAMESPACES and NAMESPACES[held["__name__"]] is held:
            slotstate["__globals__"] = {k: v for k, v in slotstate["__globals__"].items() if k not in held}
        setstate(function, state)

    return function_setstate


class TaskUnpickler(pickle.Unpickler):
    """Unpickles a task payload with cloudpickle's function hooks replaced (see the module docstring);
    ``made`` collects the functions it rebuilt."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.made: list[types.FunctionType] = []

    def find_class(self, module: str, name: str) -> Any:
        if module in _HOOK_MODULES:
            if name == "_make_function":
                return self._make_function
            if name == "_function_setstate":
                return keeping_held(super().find_class(module, name))
        return super().find_class(module, name)

    def _make_function(self, code: types.CodeType, base_globals: dict[str, Any], name: Optional[str],
                       argdefs: Optional[tuple], closure: Optional[tuple]) -> types.FunctionType:
        shared = namespace_of(base_globals)
        shared["__builtins__"] = __builtins__
        function = types.FunctionType(code, shared, name, argdefs, closure)
        self.made.append(function)
        return function


def loads_task(payload: bytes) -> Any:
    """The call a task payload holds (``(fn, args, kwargs)``), its functions in their modules' shared
    namespaces, and its sources (if any) restored."""
    stream = io.BytesIO(payload)
    unpickler = TaskUnpickler(stream)
    call = unpickler.load()
    rest = stream.read()
    if rest:
        restore_sources(pickle.loads(rest), unpickler.made)
    return call


def restore_sources(sources: tuple, functions: list[types.FunctionType]) -> None:
    """Give ``functions`` their code's file names back and put the source lines into :mod:`linecache`."""
    import linecache

    names, lines = sources
    files = {(name, first): filename for name, first, filename in names}
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
