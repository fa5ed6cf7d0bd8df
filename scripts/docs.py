#!/usr/bin/env python3
"""Build the documentation site (docs/, mkdocs.yml) into site/ with MkDocs.

    python3 scripts/docs.py          # build site/; open site/index.html in a browser
    python3 scripts/docs.py serve    # preview on http://127.0.0.1:8000, rebuilt on every change

The build is strict (``mkdocs build --strict``): a broken link, a reference to a name the API does
not have or a missing included file fails it. MkDocs, Material and mkdocstrings are installed into
their own venv under the cache (scripts/_setup.py ``docs_python()``); the API reference is read from
the package's docstrings without importing it, and links to the Python docs through the inventory of
Debian's Python documentation package (``python_inventory()``). The ``docs`` test tier builds the
site too (tests/test_docs.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _setup

ROOT = _setup.ROOT
SITE = ROOT / "site"


def build_command(python: str | Path, site_dir: Path = SITE, config: Path = ROOT / "mkdocs.yml") -> list[str]:
    """The strict build, for the interpreter of the docs venv."""
    return [
        str(python),
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--clean",
        "--config-file",
        str(config),
        "--site-dir",
        str(site_dir),
    ]


def environment() -> dict[str, str]:
    """The build's environment: where Python's inventory is (mkdocs.yml reads it), and no banner."""
    return dict(
        os.environ,
        MAINTHREAD_TASKS_PYTHON_INVENTORY=_setup.python_inventory().as_uri(),
        # Material 9.x prints a banner about its successor at every build; the pinned version is
        # what this site is built with, so keep the build's output to what the build says.
        NO_MKDOCS_2_WARNING="1",
    )


def main(argv: list[str]) -> int:
    python = _setup.docs_python()
    if argv[:1] == ["serve"]:
        return subprocess.run(
            [str(python), "-m", "mkdocs", "serve", "--strict", *argv[1:]], cwd=ROOT, env=environment()
        ).returncode
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    code = subprocess.run(build_command(python), cwd=ROOT, env=environment()).returncode
    if code:
        print(f"DOCS FAILED: mkdocs build --strict exited with {code} (the first WARNING above says why)")
    else:
        print(f"built {SITE.relative_to(ROOT)}/index.html")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
