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

    class Loader(yaml.SafeLoader):  # mkdocs.yml's !ENV tags: not needed for the nav
        pass

    Loader.add_constructor("!ENV", lambda loader, node: None)
    walk(yaml.load((ROOT / "mkdocs.yml").read_text(), Loader)["nav"])
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
    html = _html(site, "reference.md").read_text() + _html(site, "errors.md").read_text()
    missing = [name for name in mainthread_tasks.__all__ if f'id="mainthread_tasks.{name}"' not in html]
    assert not missing, f"add them to docs/reference.md or docs/errors.md: {missing}"
    # The types that public functions return or take, though not importable from the package.
    for path in ("_process.ProcessFuture", "_async.AsyncFuture", "_headless.Until"):
        assert f'id="mainthread_tasks.{path}"' in html, path


#: Offences in the built API pages left on purpose: (page, the object's anchor, the offence). None:
#: the check below fails on any offence, and on a listed one that is gone.
KNOWN_OFFENDERS: set[tuple[str, str, str]] = set()

_SECTION = re.compile(r'<h[2-6] id="(mainthread_tasks\.[\w.]+)"')
_ROLE = re.compile(r":(class|func|meth|attr|exc|mod|data|obj|ref):")
_PRIVATE = re.compile(r"(?<![\w.])_[A-Za-z]\w*")


def _text(html: str) -> str:
    import html as html_module

    return html_module.unescape(re.sub(r"<[^>]+>", "", html))


def _private_helpers() -> set[str]:
    """Module-level functions of the package's private modules that the package does not export."""
    import ast

    names = set()
    for module in (ROOT / "mainthread_tasks").glob("_*.py"):
        for node in ast.parse(module.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                names.add(node.name)
    return names - set(mainthread_tasks.__all__)


def _offences(page: str, html: str) -> set[tuple[str, str, str]]:
    found = set()
    helpers = _private_helpers()
    cuts = [(m.start(), m[1]) for m in _SECTION.finditer(html)]
    for (start, anchor), (end, _) in zip(cuts, [*cuts[1:], (len(html), "")], strict=True):
        part = html[start:end]
        text = _text(part)
        for role in _ROLE.finditer(text):
            found.add((page, anchor, f"Sphinx role {role[0]!r}"))
        if "\\ " in text:
            found.add((page, anchor, "RST escape '\\ '"))
        if "``" in text:
            found.add((page, anchor, "a double backquote shown"))
        if any(_text(p).rstrip().endswith("::") for p in re.findall(r"<p>(.*?)</p>", part, re.S)):
            found.add((page, anchor, "RST '::' before an example"))
        for signature in re.findall(r'<div class="doc-signature[^"]*"[^>]*>(.*?)</div>', part, re.S):
            for name in _PRIVATE.findall(_text(signature)):
                found.add((page, anchor, f"private name in the signature: {name}"))
            if "doc-attribute" in part[:600] and " = " in _text(signature) and not anchor.endswith(".Until"):
                found.add((page, anchor, "an attribute's value (init code) shown"))
        for name in sorted(helpers):
            if re.search(rf"(?<![\w.]){name}\(\)", text):
                found.add((page, anchor, f"private helper named: {name}()"))
    return found


def test_the_api_pages_show_no_stray_markup_init_code_or_private_name(site):
    found = set()
    for page in ("reference.md", "errors.md"):
        found |= _offences(page, _html(site, page).read_text())
    new, fixed = found - KNOWN_OFFENDERS, KNOWN_OFFENDERS - found
    assert not new, f"fix these in the docstrings (Google style, Markdown): {sorted(new)}"
    assert not fixed, f"fixed: delete them from KNOWN_OFFENDERS: {sorted(fixed)}"


def test_signatures_read_as_users_call_them_and_link_to_the_python_docs(site):
    html = _html(site, "reference.md").read_text()
    text = _text(html)
    # Real parameter names, formatted (ruff), the type variables without their underscore.
    signature = "run_on_main(\n    fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs\n) -> MainThreadFuture[T]"
    assert signature in text
    # Context managers as such, not as the generators they are written as.
    for name, yields in (("joined_threads", "ThreadScope"), ("ui_context", "")):
        part = html[html.index(f'id="mainthread_tasks.{name}"') :][:4000]
        assert f"AbstractContextManager[{yields}" in _text(part) and "context manager" in _text(part), name
    assert "Iterator[" not in text
    # Links to the Python docs, from Debian's inventory of them.
    assert 'href="https://docs.python.org/3/library/concurrent.futures.html#concurrent.futures.Future"' in html
    assert 'href="https://docs.python.org/3/library/contextlib.html#contextlib.AbstractContextManager"' in html


#: The site's pages for users (Home, Learn, Guides, Reference), and the README.
USER_PAGES = [
    "README.md",
    *(f"docs/{page}" for page in ("index.md", "tutorial.md", "headless.md", "testing.md", "examples.md")),
    *(f"docs/{page}" for page in ("ui.md", "processes.md", "other-addons.md")),
    *(f"docs/{page}" for page in ("reference.md", "errors.md", "guarantees.md")),
]


def test_the_user_pages_name_no_test_tier_and_their_code_fits_the_column():
    tiers = [name for name in load_script("run_tests").TIERS if "-" in name]
    assert "blender-background" in tiers
    nav = set(_nav_pages())
    for page in USER_PAGES:
        assert page == "README.md" or page.removeprefix("docs/") in nav, page
        source = (ROOT / page).read_text()
        prose = re.sub(r"^```.*?^```$", "", source, flags=re.M | re.S)
        assert not re.search(r"\btiers?\b", prose), f"{page} speaks of test tiers"
        named = [tier for tier in tiers if re.search(rf"(?<![\w-]){re.escape(tier)}(?![\w-])", source)]
        assert not named, f"{page} names test tiers: {named}"
        # The text column holds about 80 characters of code at 1280 px (the site's screenshots).
        for block in re.findall(r"^```[^\n]*\n(.*?)^```$", source, re.M | re.S):
            long = [line for line in block.splitlines() if len(line) > 80 and not line.startswith("--8<--")]
            assert not long, f"{page}: code lines longer than 80 characters: {long}"


def test_the_bench_plots_and_table_reach_the_performance_page(site):
    html = _html(site, "performance.md").read_text()
    for plot in ("round_trip.png", "stall.png", "throughput.png"):
        assert f'src="../bench/{plot}"' in html, plot
        assert (site / "bench" / plot).read_bytes() == (ROOT / "bench" / "results" / plot).read_bytes()
    first_row = (ROOT / "bench" / "results" / "latest.md").read_text().splitlines()[2].split("|")[1].strip()
    assert first_row and first_row in html, "the table of bench/results/latest.md is included"


def _copy_project(target: Path) -> Path:
    """What a docs build reads, copied, so that a test may break it."""
    for name in ("docs", "mainthread_tasks", "bench/results", "examples/asset_downloader"):
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
