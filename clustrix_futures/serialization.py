"""Client-side pickling: tasks out (failing loudly, naming the culprit), outcomes back into futures (decoded by
:mod:`clustrix_futures.runfiles.outcomes`)."""

from __future__ import annotations

import io
import linecache
import operator
import os
import pickle
import site
import sys
import sysconfig
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import BuiltinFunctionType, CodeType, FunctionType, ModuleType
from typing import Any, Optional

import cloudpickle

from clustrix_futures.future import ClusterFuture
from clustrix_futures.node import loading
from clustrix_futures.runfiles.outcomes import Outcome, exception_of


def _describe(obj: Any) -> str:
    """An object's type, as an error message names it."""
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__} object" if kind.__module__ != "builtins" else kind.__name__


def _culprit(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The first part of a call that does not pickle, as an error message names it."""
    parts = [("the function " + repr(getattr(fn, "__qualname__", fn)), fn)]
    parts += [(f"positional argument {i}", value) for i, value in enumerate(args)]
    parts += [(f"keyword argument {name!r}", value) for name, value in kwargs.items()]
    for label, value in parts:
        try:
            cloudpickle.dumps(value)
        except Exception:
            return f"{label} ({_describe(value)})"
    return "the call"


def _installed_roots() -> tuple[str, ...]:
    """The directories of the standard library and installed packages, each ending in a separator."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    return tuple(os.path.realpath(root) + os.sep for root in roots)


_INSTALLED = _installed_roots()
_NEVER_SHIPPED = {"clustrix_futures", "cloudpickle", "__main__", "builtins"}
_is_own: dict[str, bool] = {}
_registry = threading.Lock()  # cloudpickle's by-value registry is process-wide: toggle it under a lock


def user_modules(objects: Iterable[Any]) -> list[ModuleType]:
    """The top-level modules of ``objects`` that are the user's own code, not installed ones.

    A module counts as the user's own when its file lies outside the interpreter's installed-package and
    standard-library directories: a ``tasks.py`` beside a script, a package under development. A compute
    node does not have it, so it must travel with the task, by value.
    """
    found = []
    for obj in objects:
        top = (getattr(obj, "__module__", None) or type(obj).__module__ or "").split(".")[0]
        module = sys.modules.get(top)
        if _is_own_module(top) and module is not None and module not in found:
            found.append(module)
    return found


def _is_own_module(top: str) -> bool:
    """Whether the top-level module ``top`` is the user's own (see :func:`user_modules`); cached."""
    if top not in _is_own:
        path = getattr(sys.modules.get(top), "__file__", None)
        _is_own[top] = (top not in _NEVER_SHIPPED and path is not None
                        and not os.path.realpath(path).startswith(_INSTALLED))
    return _is_own[top]


def dumps_task(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
               ship_code: bool = False) -> bytes:
    """Pickle a call with cloudpickle; raise ``TypeError`` naming what could not be pickled.

    With ``ship_code``, the user's own modules used by the call travel by value (:func:`user_modules`),
    for this pickle only. When functions travel by value, the pickle is followed by their sources (file names
    and lines, :func:`sources_of`) for the node's tracebacks (:mod:`clustrix_futures.node.loading`).
    """
    with _registry:
        shipped = [m for m in user_modules([fn, *args, *kwargs.values()]) if ship_code
                   and m.__name__ not in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES]
        for module in shipped:
            cloudpickle.register_pickle_by_value(module)
        try:
            return _dumps_with_sources((function_blob(fn, ship_code) or fn, tuple(args), dict(kwargs)))
        except Exception as exc:
            raise TypeError(f"cannot submit: {_culprit(fn, args, kwargs)} could not be pickled: {exc}") from exc
        finally:
            for module in shipped:
                cloudpickle.unregister_pickle_by_value(module)


_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_blobs: weakref.WeakKeyDictionary[FunctionType, tuple[tuple[Any, ...], Optional[bytes]]] = weakref.WeakKeyDictionary()
_global_names: weakref.WeakKeyDictionary[CodeType, tuple[str, ...]] = weakref.WeakKeyDictionary()


def function_blob(fn: Any, ship_code: bool) -> Optional[bytes]:
    """``fn``'s own payload (its pickle, and its sources), made once and sent again while nothing its pickle
    holds can have changed; None for a function whose pickle may change between calls.

    A node keeps the function it loads from a blob (:func:`clustrix_futures.node.loading.loads_task`), so a
    task of a function already seen costs neither side its rebuild. Only a plain function qualifies: no
    closure, no attributes, defaults that are scalars, and every global it names a module pickled by
    reference, a built-in function or a scalar (so a helper function, a class or a container in its globals,
    any of which may change in place, gets it pickled afresh each time). The blob is made again when the
    code, a default, a name or any of those globals is no longer the same object."""
    if (type(fn) is not FunctionType or fn.__closure__ is not None or fn.__dict__
            or _travels_by_reference(fn, ship_code)):
        return None
    names = _global_names.get(fn.__code__)
    if names is None:
        names = _global_names[fn.__code__] = tuple(sorted(_names_used(fn.__code__)))
    held = fn.__globals__  # read-only: not in the key
    key = (fn.__code__, fn.__defaults__, fn.__kwdefaults__, fn.__name__, fn.__qualname__, fn.__module__,
           ship_code, len(cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES),
           *(held.get(name, _SCALARS) for name in names))
    known = _blobs.get(fn)
    if known is not None and len(known[0]) == len(key) and all(map(operator.is_, known[0], key)):
        return known[1]
    fixed = _never_changes(fn, [held[name] for name in names if name in held], ship_code)
    blob = _dumps_with_sources(fn) if fixed else None
    _blobs[fn] = (key, blob)  # a function that does not qualify is not looked at again while the key holds
    return blob


def _travels_by_reference(fn: FunctionType, ship_code: bool) -> bool:
    """Whether ``fn`` pickles as its module and name (importable, and its module not shipped by value): a
    pickle that small is not worth a blob."""
    name = fn.__module__
    if name == "__main__" or getattr(sys.modules.get(name), fn.__name__, None) is not fn:
        return False
    return not _ships_by_value(name, ship_code)


def _ships_by_value(module: str, ship_code: bool) -> bool:
    """Whether cloudpickle pickles what the module ``module`` holds by value: it or its package is registered
    so, by the user or (with ``ship_code``) by :func:`dumps_task` for the user's own modules."""
    top = module.split(".")[0]
    by_value = cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES
    return module in by_value or top in by_value or (ship_code and _is_own_module(top))


def _names_used(code: CodeType) -> set[str]:
    """The names ``code`` and the code nested in it look up (globals among them), as cloudpickle finds them."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names_used(const)
    return names


def _never_changes(fn: FunctionType, values: list[Any], ship_code: bool) -> bool:
    """Whether ``fn``'s pickle is the same for as long as these globals and its defaults are the same objects."""
    defaults = [*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()]
    if not all(isinstance(value, _SCALARS) for value in defaults):
        return False
    for value in values:
        if isinstance(value, ModuleType):
            if _ships_by_value(value.__name__, ship_code):
                return False
        elif not isinstance(value, (*_SCALARS, BuiltinFunctionType)):
            return False
    return True


class TaskPickler(cloudpickle.CloudPickler):
    """cloudpickle's pickler, noting the code of each function it pickles by value (in ``codes``), which the
    node rebuilds in its module's one namespace.

    cloudpickle 2 and 3 reduce every function they pickle by value in ``_dynamic_function_reduce``, and only
    those: hooking it costs nothing per object (a ``reducer_override`` would be called for every one)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.codes: list[CodeType] = []

    def _dynamic_function_reduce(self, func: FunctionType) -> Any:
        """cloudpickle's reduction, with the node's hooks (:mod:`clustrix_futures.node.loading`) for its own."""
        self.codes.append(func.__code__)
        _, newargs, state, items, pairs, _ = super()._dynamic_function_reduce(func)
        return loading.make_function, newargs, state, items, pairs, loading.function_setstate


def _dumps_with_sources(call: Any) -> bytes:
    """The call's cloudpickle, followed by the plain pickle of its by-value functions' sources if it has any."""
    with io.BytesIO() as file:
        pickler = TaskPickler(file)
        pickler.dump(call)
        if pickler.codes:
            file.write(sources_pickle(tuple(dict.fromkeys((code.co_filename, code) for code in pickler.codes))))
        return file.getvalue()


_sources: dict[tuple[tuple[str, CodeType], ...], bytes] = {}


def sources_pickle(codes: tuple[tuple[str, CodeType], ...]) -> bytes:
    """The sources of these functions' code (each with its file name: equal code objects of two files compare
    equal), in the format of :mod:`clustrix_futures.node.loading`; cached."""
    if codes not in _sources:
        if len(_sources) > 1024:
            _sources.clear()
        names: list[tuple[str, int, str]] = []
        lines: dict[str, dict[int, str]] = {}
        for _, code in codes:
            found_names, found_lines = sources_of(code)
            names += found_names
            if found_lines:
                lines.setdefault(code.co_filename, {}).update(found_lines)
        _sources[codes] = pickle.dumps((tuple(names), tuple((f, tuple(n.items())) for f, n in lines.items())),
                                       protocol=pickle.HIGHEST_PROTOCOL)
    return _sources[codes]


def sources_of(code: CodeType) -> tuple[list[tuple[str, int, str]], dict[int, str]]:
    """``(co_name, co_firstlineno, co_filename)`` of a function's code and of the code nested in it, and the
    lines from its first to its last (by number, from :mod:`linecache`: a file, or a notebook's cell)."""
    names, last, pending = [], code.co_firstlineno, [code]
    while pending:
        inner = pending.pop()
        names.append((inner.co_name, inner.co_firstlineno, inner.co_filename))
        last = max([last, *(line for _, _, line in inner.co_lines() if line)])
        pending += [c for c in inner.co_consts if isinstance(c, CodeType) and c.co_filename == code.co_filename]
    text = linecache.getlines(code.co_filename)
    return names, {n: text[n - 1] for n in range(code.co_firstlineno, min(last, len(text)) + 1)}


def resolve(future: ClusterFuture, outcome: Outcome) -> None:
    """Set the future's result or exception from an outcome, unless it has already ended."""
    if outcome[0]:
        future.set_result_if_pending(outcome[1])
    else:
        future.set_exception_if_pending(exception_of(outcome))
