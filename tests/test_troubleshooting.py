"""Every message quoted in docs/troubleshooting.md still exists in the package's source.

The page's convention: a quoted message is a line ``> `MESSAGE` `` (a blockquote holding one code span), written
as in the code, with each part that varies shown as ``{...}`` (any text in braces). A message is found when one
string of the source (an f-string or a literal; adjacent literals joined, as Python joins them) holds its
literal parts in order. In an f-string, each replacement field counts as ``{}``, so a quoted placeholder may
stand for fields and for text the reader does not need; the literal text around it must match exactly.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "troubleshooting.md"
QUOTE = re.compile(r"^> `(.+)`\s*$")
PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def quoted_messages(text: str) -> list[tuple[int, str]]:
    """The page's quoted messages, with their line numbers (from 1)."""
    return [(number, found.group(1)) for number, line in enumerate(text.splitlines(), 1)
            if (found := QUOTE.match(line))]


def _render(node: ast.AST) -> str:
    """A string node's text, each replacement field of an f-string as ``{}``."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    assert isinstance(node, ast.JoinedStr)
    return "".join(str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values)


@lru_cache(maxsize=1)
def source_strings() -> tuple[str, ...]:
    """Every string literal and f-string of the package, rendered by :func:`_render`."""
    found = []
    for path in sorted((ROOT / "clustrix_futures").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        inner = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        found += [_render(node) for node in ast.walk(tree) if id(node) not in inner and (
            isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)))]
    return tuple(found)


def pattern_of(message: str) -> re.Pattern[str]:
    """The message's literal parts, in order, anything (or nothing) where it shows ``{...}``."""
    parts = PLACEHOLDER.split(message)
    return re.compile(".*?".join(re.escape(part) for part in parts), re.S)


def in_source(message: str) -> bool:
    pattern = pattern_of(message)
    return any(pattern.search(text) for text in source_strings())


MESSAGES = quoted_messages(PAGE.read_text())


def test_the_page_quotes_its_ten_errors_and_more():
    headings = re.findall(r"^## (\d+)\. ", PAGE.read_text(), re.M)
    assert headings == [str(n) for n in range(1, 11)], "the page lists ten numbered errors"
    assert len(MESSAGES) >= 10


@pytest.mark.parametrize("line, message", MESSAGES, ids=[f"line{line}" for line, _ in MESSAGES])
def test_quoted_message_exists_in_the_code(line, message):
    assert PLACEHOLDER.sub("", message).strip(), f"docs/troubleshooting.md:{line} quotes only placeholders"
    assert in_source(message), (f"docs/troubleshooting.md:{line}: {message!r} is not in clustrix_futures/ any "
                                f"more: update the page to the code's current message")


def test_the_matcher_keeps_literal_text_exact_and_in_order():
    assert in_source("the scheduler rejected the submission: {refused}")
    assert in_source("the SSH host key of {target} is not trusted: it is unknown, or it changed ({...})")  # joined
    assert not in_source("the scheduler refused the submission: {refused}")
    assert not in_source("could not be pickled: {exc} cannot submit:")  # both parts exist, not in this order
    assert not in_source("cannot submit: {x} could not be pickled: {y}; and then some")


def test_the_reader_sees_only_the_marked_quotes():
    text = "> `first {a} message`\n> a plain quote\nnot > `a quote`\n>  `indented twice`\n> `second`  \n"
    assert quoted_messages(text) == [(1, "first {a} message"), (5, "second")]
