"""The documentation builds and the generated configuration reference is current."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_config_reference_is_generated_from_the_schema():
    render = runpy.run_path(str(ROOT / "docs" / "gen_config.py"))["render"]
    assert (ROOT / "docs" / "config.md").read_text() == render(), "run: python docs/gen_config.py"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation built with ``mkdocs build --strict`` (the API reference by mkdocstrings included)."""
    built = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return built


def test_mkdocs_build_is_strict_clean(site):
    assert (site / "index.html").is_file()
    assert (site / "reference" / "index.html").is_file(), "the API reference page was not built"


def documented(site: Path) -> dict[str, str]:
    """The objects the built API reference renders, by qualified name: the text of each one's section."""
    page = (site / "reference" / "index.html").read_text()
    anchors = list(re.finditer(r'<h[2-6] id="(clustrix_futures\.[\w.]+)"', page))
    return {found.group(1): re.sub(r"<[^>]+>", " ", page[found.end():(anchors[i + 1].start() if i + 1 < len(anchors)
                                                                      else len(page))])
            for i, found in enumerate(anchors)}


def test_every_public_name_is_in_the_api_reference(site):
    import clustrix_futures

    objects = documented(site)
    directives = re.findall(r"^::: ([\w.]+)", (ROOT / "docs" / "reference.md").read_text(), re.M)
    for name in clustrix_futures.__all__:
        value = getattr(clustrix_futures, name)
        qualified = f"{value.__module__}.{value.__qualname__}"
        assert qualified in directives, f"docs/reference.md has no '::: {qualified}' for clustrix_futures.{name}"
        assert qualified in objects, f"the built reference does not render {qualified}"
        assert value.__doc__ and len(objects[qualified].split()) >= len(value.__doc__.split()) // 2, \
            f"{qualified} renders without its docstring"


def test_the_reference_covers_what_the_executor_hands_out(site):
    objects = documented(site)
    for qualified in ("clustrix_futures.executor.ResourceView", "clustrix_futures.remote.files.RemoteFiles",
                      "clustrix_futures.config.OPTIONS", "clustrix_futures.decorator.ClusterFunction",
                      "clustrix_futures.executor.ClusterPoolExecutor.submit",
                      "clustrix_futures.executor.ClusterPoolExecutor.map",
                      "clustrix_futures.executor.ClusterPoolExecutor.shutdown",
                      "clustrix_futures.executor.ClusterPoolExecutor.options",
                      "clustrix_futures.executor.ClusterPoolExecutor.files",
                      "clustrix_futures.future.ClusterFuture.result"):
        assert qualified in objects, f"the built reference does not render {qualified}"


def test_the_reference_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in ("reference.md", "local.md", "logging.md", "troubleshooting.md"):
        assert f": {page}" in nav, f"mkdocs.yml's nav lacks {page}"
