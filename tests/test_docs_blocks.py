"""Every fenced code block in README.md and docs/*.md runs as written, or says that it does not.

The convention (also in the README's contributor note), by the line just before the opening fence:

- no marker, ``python``: runs as a script on local processes, in an empty HOME with no configuration;
- ``<!-- cluster -->``, ``python``: runs against the test SLURM (``tests/infra/slurm.sh``), with the
  ``work_dir="..."`` it tells the reader to change replaced by a temporary directory;
- no marker, ``yaml``: a configuration file; every profile in it must resolve with the project's loader;
- ``<!-- fragment -->``: not run (shell commands, outputs, diagrams, snippets that need a real cluster); a
  python fragment must still compile.

Any other block without a marker fails, naming its file and line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRAGMENT, CLUSTER = "<!-- fragment -->", "<!-- cluster -->"
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
WORK_DIR = re.compile(r"""work_dir=(["'])[^"']*\1""")
RUN_WAIT = 300  # seconds: a bound against hangs, not a performance assertion


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, from 1
    language: str
    marker: str  # the line before the fence, stripped
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the line just before each."""
    found, lines, index = [], path.read_text().splitlines(), 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, body, end = opening.group(1), [], index + 1
        indent = len(lines[index]) - len(lines[index].lstrip())
        while end < len(lines) and not lines[end].strip().startswith(fence):
            body.append(lines[end][indent:])
            end += 1
        marker = lines[index - 1].strip() if index else ""
        found.append(Block(path, index + 1, opening.group(2).lower(), marker, "\n".join(body) + "\n"))
        index = end + 1
    return found


ALL_BLOCKS = [block for path in DOCUMENTS for block in blocks(path)]


def run_script(block: Block, tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """Run ``text`` as ``python block.py`` in an empty HOME and working directory, with this checkout's code."""
    home = tmp_path / "home"
    home.mkdir()
    script = home / "block.py"
    script.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTRIX_FUTURES_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(script)], cwd=home, env=env, capture_output=True, text=True,
                          timeout=RUN_WAIT)
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"
    return done


def check_configuration(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clustrix_futures import config

    path = tmp_path / "config.yaml"
    path.write_text(block.text)
    monkeypatch.setenv(config.CONFIG_ENV, str(path))
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)
    profiles = config.load_profiles()
    assert profiles, f"{block.where}: a yaml block must be a configuration file with profiles"
    for name in profiles:
        config.resolve(name, None, None, {})  # a ConfigError names the bad key


def role(block: Block) -> str:
    """``fragment``, ``cluster``, ``local`` or ``configuration``; an unmarked block that is none is an error."""
    if block.marker == FRAGMENT:
        return "fragment"
    if block.marker == CLUSTER:
        if block.language != "python" or not WORK_DIR.search(block.text):
            raise ValueError(f"{block.where}: a cluster block is python and names the work_dir to change")
        return "cluster"
    if block.language in ("python", "yaml"):
        return "local" if block.language == "python" else "configuration"
    raise ValueError(f"{block.where}: a {block.language or 'plain'} block that is not run: mark it with "
                     f"{FRAGMENT} on the line before the fence (or make it a runnable python or yaml block)")


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[block.where for block in ALL_BLOCKS])
def test_block_runs_as_written_or_is_marked(block, tmp_path, monkeypatch, request):
    try:
        kind = role(block)
    except ValueError as exc:
        pytest.fail(str(exc))
    if kind == "fragment" and block.language == "python":
        compile(block.text, block.where, "exec")
    elif kind == "cluster":
        request.getfixturevalue("slurm")
        run_script(block, tmp_path, WORK_DIR.sub(f"work_dir={str(tmp_path / 'runs')!r}", block.text))
    elif kind == "local":
        run_script(block, tmp_path, block.text)
    elif kind == "configuration":
        check_configuration(block, tmp_path, monkeypatch)


def test_readme_first_example_prints_its_answer_with_no_configuration(tmp_path):
    first = next(block for block in ALL_BLOCKS if block.path.name == "README.md" and block.language == "python")
    assert first.marker == "", "the README's first example runs locally, as written"
    done = run_script(first, tmp_path, first.text)
    assert done.stdout.strip() == "328350"


def test_readme_cluster_example_is_complete_and_says_what_to_change():
    cluster = [block for block in ALL_BLOCKS if block.path.name == "README.md" and block.marker == CLUSTER]
    assert len(cluster) == 1
    assert "def " in cluster[0].text and "# change" in cluster[0].text


def test_the_block_reader_sees_markers_and_languages(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- fragment -->\n```sh\nls\n```\n\n```python\nprint(1)\n```\n\n"
                    "    ```yaml\n    a: 1\n    ```\n")
    found = [(b.line, b.language, b.marker, b.text) for b in blocks(page)]
    assert found == [(3, "sh", FRAGMENT, "ls\n"), (7, "python", "", "print(1)\n"), (11, "yaml", "", "a: 1\n")]


def test_an_unmarked_block_fails_and_says_how_to_mark_it():
    unmarked = Block(ROOT / "README.md", 1, "sh", "", "ls\n")
    with pytest.raises(ValueError, match="README.md:1: a sh block that is not run: mark it with <!-- fragment -->"):
        role(unmarked)
    with pytest.raises(ValueError, match="names the work_dir"):
        role(Block(ROOT / "README.md", 1, "python", CLUSTER, "print(1)\n"))
