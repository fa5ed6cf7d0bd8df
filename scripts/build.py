#!/usr/bin/env python3
"""Build the installable add-on: ``dist/mainthread_tasks-<version>.zip``.

    python3 scripts/build.py          # prints the path of the zip

The zip holds one folder, ``mainthread_tasks/``, with the package and ``blender_manifest.toml``.
Standard library only.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mainthread_tasks"
DIST = ROOT / "dist"


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (PACKAGE / "__init__.py").read_text(), re.M)
    if not match:
        raise SystemExit("no __version__ in mainthread_tasks/__init__.py")
    return match.group(1)


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def build_zip() -> Path:
    DIST.mkdir(exist_ok=True)
    target = DIST / f"mainthread_tasks-{version()}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in package_files():
            archive.write(path, f"mainthread_tasks/{path.relative_to(PACKAGE).as_posix()}")
        manifest = ROOT / "blender_manifest.toml"
        if manifest.exists():
            archive.write(manifest, "mainthread_tasks/blender_manifest.toml")
    return target


def main() -> int:
    print(build_zip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
