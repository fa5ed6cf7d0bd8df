"""The documentation site (tier ``docs``, run in the docs venv that scripts/_setup.py builds).

The site builds with ``mkdocs build --strict`` exactly as ``python3 scripts/docs.py`` does; every
page of the navigation is built; the API reference has an entry for every public name; the
benchmark's plots and table reach the Performance page; and the strict build really fails on a
broken link or a reference to a name the API does not have. The README's own links resolve.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

import mainthread_tasks
from tests.support import ROOT, load_script, run

pytestmark = pytest.mark.docs

BUILD_TIMEOUT = 100  # seconds; a build takes a few


docs_script = load_script("docs")


def _build(project: Path, site: Path):
    """``mkdocs build --strict`` of the project at ``project`` (its mkdocs.yml), as scripts/docs.py runs it."""
    return run(
        docs_script.build_command(sys.executable, site, project / "mkdocs.yml"),
        BUILD_TIMEOUT,
        cwd=project,
        env=docs_script.environment(),
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    proc = _build(ROOT, site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return site


def _nav_pages() -> list[str]:
    import yaml  # comes with MkDocs

    pages = []

    def walk(entries):
        for entry in entries:
            for value in entry.values():
                walk(value) if isinstance(value, list) else pages.append(value)

    walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    return pages


def _html(site: Path, page: str) -> Path:
    return site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")


def test_every_page_in_the_nav_is_built_and_every_doc_is_in_the_nav(site):
    pages = _nav_pages()
    assert {"index.md", "reference.md", "performance.md", "reliability.md", "design.md"} <= set(pages)
    for page in pages:
        assert _html(site, page).is_file(), page
    on_disk = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")}
    assert on_disk == set(pages), "every page in docs/ must be in the nav of mkdocs.yml, and only those"


def test_the_api_reference_has_an_entry_for_every_public_name(site):
    html = _html(site, "reference.md").read_text()
    missing = [name for name in mainthread_tasks.__all__ if f'id="mainthread_tasks.{name}"' not in html]
    assert not missing, f"add them to docs/reference.md: {missing}"


def test_the_bench_plots_and_table_reach_the_performance_page(site):
    html = _html(site, "performance.md").read_text()
    for plot in ("round_trip.png", "stall.png", "throughput.png"):
        assert f'src="../bench/{plot}"' in html, plot
        assert (site / "bench" / plot).read_bytes() == (ROOT / "bench" / "results" / plot).read_bytes()
    first_row = (ROOT / "bench" / "results" / "latest.md").read_text().splitlines()[2].split("|")[1].strip()
    assert first_row and first_row in html, "the table of bench/results/latest.md is included"


def _copy_project(target: Path) -> Path:
    """What a docs build reads, copied, so that a test may break it."""
    for name in ("docs", "mainthread_tasks", "bench/results"):
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "scripts/docs_hooks.py"):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    return target


@pytest.mark.parametrize(
    "broken, complaint",
    [
        ("[the pump](no-such-page.md)", "no-such-page.md"),
        ("[the pump][mainthread_tasks.no_such_function]", "mainthread_tasks.no_such_function"),
        ('--8<-- "bench/results/no_such_table.md"', "no_such_table.md"),
    ],
)
def test_a_broken_link_reference_or_snippet_fails_the_strict_build(tmp_path, broken, complaint):
    project = _copy_project(tmp_path / "project")
    page = project / "docs" / "headless.md"
    page.write_text(page.read_text() + f"\n\n{broken}\n")
    proc = _build(project, tmp_path / "site")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert complaint in proc.stdout + proc.stderr


def test_the_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]
    assert local, "the README links to the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing
