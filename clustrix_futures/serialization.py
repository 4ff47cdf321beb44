"""Client-side pickling: tasks out (failing loudly, naming the culprit), outcomes back into futures (decoded by
:mod:`clustrix_futures.runfiles.outcomes`)."""

from __future__ import annotations

import os
import pickle
import site
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import cloudpickle

from clustrix_futures.future import ClusterFuture
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
        if top not in _is_own:
            path = getattr(module, "__file__", None)
            _is_own[top] = (top not in _NEVER_SHIPPED and path is not None
                            and not os.path.realpath(path).startswith(_INSTALLED))
        if _is_own[top] and module is not None and module not in found:
            found.append(module)
    return found


def dumps_task(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
               ship_code: bool = False) -> bytes:
    """Pickle a call with cloudpickle; raise ``TypeError`` naming what could not be pickled.

    With ``ship_code``, the user's own modules used by the call travel by value (:func:`user_modules`),
    for this pickle only.
    """
    with _registry:
        shipped = [m for m in user_modules([fn, *args, *kwargs.values()]) if ship_code
                   and m.__name__ not in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES]
        for module in shipped:
            cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps((fn, tuple(args), dict(kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"cannot submit: {_culprit(fn, args, kwargs)} could not be pickled: {exc}") from exc
        finally:
            for module in shipped:
                cloudpickle.unregister_pickle_by_value(module)


def resolve(future: ClusterFuture, outcome: Outcome) -> None:
    """Set the future's result or exception from an outcome, unless it has already ended."""
    if outcome[0]:
        future.set_result_if_pending(outcome[1])
    else:
        future.set_exception_if_pending(exception_of(outcome))
