"""The shell-neutral command line of ``remote/commandline.py`` under real local shells (sh, bash, tcsh when
installed): every word but NUL arrives intact, and the fixed script is refused if it could be changed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from clustrix_futures.remote.commandline import argv_line, command_line, encode

WORDS = ["plain-word_1.txt", "a b", "x\ny\n", "it's", 'q"q', "!x!", "$HOME", "`id`", "a;b|c&d", "", "é☃",
         "\\", "\\\n", "{a,b}", "~", "*", "%1", "\t", "\r\n", "-n", "o123", "p"]
SHELLS = [path for path in ("/bin/sh", "/bin/bash", "/usr/bin/tcsh", "/bin/csh") if shutil.which(path)]


@pytest.mark.parametrize("shell", SHELLS)
def test_every_word_reaches_the_command_intact(shell):
    line = argv_line([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *WORDS])
    done = subprocess.run([shell, "-c", line], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == WORDS


def test_encoded_words_use_only_characters_no_shell_treats_specially():
    for word in WORDS:
        assert all(c.isascii() and (c.isalnum() or c in "_./=:,+@-") for c in encode(word)), word


def test_nul_is_refused_and_an_unsafe_fixed_script_is_caught():
    with pytest.raises(ValueError, match="NUL"):
        encode("a\0b")
    for bad in ("echo 'x'", "echo !x", "echo a\necho b"):
        with pytest.raises(ValueError, match="login shell could change"):
            command_line(bad, [])
