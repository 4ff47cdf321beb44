"""The documentation builds and the generated configuration reference is current."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_config_reference_is_generated_from_the_schema():
    render = runpy.run_path(str(ROOT / "docs" / "gen_config.py"))["render"]
    assert (ROOT / "docs" / "config.md").read_text() == render(), "run: python docs/gen_config.py"


def test_mkdocs_build_is_strict_clean(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
