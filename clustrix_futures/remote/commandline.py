"""Command lines that every login shell (POSIX sh, bash, zsh, csh, tcsh, fish) passes on intact.

sshd runs a command through the user's login shell (``$SHELL -c LINE``), so a command line must not depend on
that shell's quoting: csh/tcsh end a single-quoted word at a newline (a newline in a word would start a new
command) and expand ``!`` (history) even inside single quotes. :func:`command_line` therefore builds

    /bin/sh -c 'DECODE; SCRIPT' sh WORD...

where the quoted part is a fixed script checked to hold no single quote, ``!``, newline or backslash-newline,
and every ``WORD`` is an *encoded* argument made only of ``[A-Za-z0-9_./=:,+@-]``, which no shell treats
specially: ``p`` + the word itself when it is made of those characters only, else ``o`` + its UTF-8 bytes as
3-digit octal numbers. ``DECODE`` (POSIX sh: ``printf`` octal escapes, one ``sed``) restores the real words as
``"$@"`` before ``SCRIPT`` runs, so every byte but NUL reaches the command — newlines, quotes, ``!``, ``$``,
backticks, ``;``. A word holding NUL cannot be an argument of any program: :func:`encode` rejects it.
Standard input is left alone, so a command can still read the input sent with it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

_PLAIN = re.compile(r"[A-Za-z0-9_./=:,+@-]*")
_UNSAFE_IN_SCRIPT = ("'", "!", "\n", "\r", "\\\n")

# Replace every argument by its decoded value, in order (the trailing x keeps trailing newlines, which
# command substitution would strip).
DECODE = (
    'n=$#; while [ "$n" -gt 0 ]; do case $1 in p*) v=${1#p} ;; '
    r'*) v=$(printf "$(printf %s "${1#o}" | sed "s/[0-7][0-7][0-7]/\\\\&/g")x"); v=${v%x} ;; esac; '
    'shift; set -- "$@" "$v"; n=$((n - 1)); done'
)


def encode(word: str) -> str:
    """One argument as a shell-neutral word (see the module docstring); ValueError for a NUL."""
    if "\0" in word:
        raise ValueError(f"a command argument cannot hold a NUL character: {word!r}")
    if _PLAIN.fullmatch(word):
        return "p" + word
    return "o" + "".join(f"{byte:03o}" for byte in word.encode("utf-8", "surrogateescape"))


def command_line(script: str, words: Sequence[str]) -> str:
    """The line that runs POSIX-sh ``script`` with ``"$@"`` = ``words`` under any login shell."""
    body = f"{DECODE}; {script}"
    bad = [text for text in _UNSAFE_IN_SCRIPT if text in body]
    if bad:  # a programming error, checked even under python -O
        raise ValueError(f"the fixed script holds {bad}, which a login shell could change")
    return " ".join(["/bin/sh", "-c", shlex.quote(body), "sh", *(encode(word) for word in words)])


def argv_line(argv: Sequence[str]) -> str:
    """The line that runs ``argv`` itself (``exec "$@"``) under any login shell."""
    return command_line('exec "$@"', argv)
