"""The package's shape, checked without any infrastructure: no function over 40 lines, no module over 400.

Cyclomatic complexity is ruff's C901 (``max-complexity = 12`` in pyproject.toml); ruff has no rule for length,
so this is that check. A function's length runs from its ``def`` (or first decorator) to its last line, less
its docstring, so documenting a contract never pushes a function over; a nested function counts in the
function that holds it as well. A module's length is its number of lines.

An exception goes in ``ALLOWED`` with the reason it is one. An entry that no longer exceeds its limit, or names
nothing, fails too, so the list never outlives its reasons.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Union

PACKAGE = Path(__file__).resolve().parents[2] / "clustrix_futures"
MAX_FUNCTION_LINES = 40
MAX_MODULE_LINES = 400

# "module/path.py" (a module) or "module/path.py::Qualified.name" (a function), relative to the package -> why
ALLOWED: dict[str, str] = {}

Function = Union[ast.FunctionDef, ast.AsyncFunctionDef]


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, Function]]:
    """Every function under ``node``, nested ones included, with its qualified name."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def function_length(function: Function) -> int:
    """Lines from the ``def`` (or its first decorator) to the function's last line, less its docstring."""
    start = min([function.lineno, *(d.lineno for d in function.decorator_list)])
    length = (function.end_lineno or function.lineno) - start + 1
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        length -= (first.end_lineno or first.lineno) - first.lineno + 1
    return length


def _modules() -> Iterator[tuple[str, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8")


def measured() -> dict[str, tuple[int, int]]:
    """Every module and function of the package: its length and its limit."""
    sizes: dict[str, tuple[int, int]] = {}
    for name, source in _modules():
        sizes[name] = (len(source.splitlines()), MAX_MODULE_LINES)
        for qualified, function in _functions(ast.parse(source, name)):
            sizes[f"{name}::{qualified}"] = (function_length(function), MAX_FUNCTION_LINES)
    return sizes


def test_no_function_or_module_is_longer_than_its_limit_unless_allowed_with_a_reason():
    too_long = {name: f"{length} lines > {limit}" for name, (length, limit) in measured().items()
                if length > limit and name not in ALLOWED}
    assert not too_long, f"split these, or add them to ALLOWED with a reason: {too_long}"


def test_every_allowed_exception_has_a_reason_and_is_still_needed():
    sizes = measured()
    for name, reason in ALLOWED.items():
        assert reason.strip(), f"{name} is allowed without a reason"
        assert name in sizes, f"ALLOWED names {name}, which is not in the package any more"
        length, limit = sizes[name]
        assert length > limit, f"{name} is {length} lines, within its limit: remove it from ALLOWED"


def test_a_function_length_counts_decorators_and_body_but_not_the_docstring():
    source = '''
class Holder:
    @staticmethod
    def documented():
        """One line,
        and another."""
        def inner():
            return 1
        return inner
'''
    functions = dict(_functions(ast.parse(source)))
    assert set(functions) == {"Holder.documented", "Holder.documented.inner"}
    assert function_length(functions["Holder.documented"]) == 5  # decorator, def, inner's two lines, return
    assert function_length(functions["Holder.documented.inner"]) == 2
