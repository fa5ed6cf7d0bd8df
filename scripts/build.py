#!/usr/bin/env python3
"""Build what users install: the add-on zip and, for add-ons that bundle the library, a wheel.

    python3 scripts/build.py            # dist/mainthread_tasks-<version>.zip; prints its path
    python3 scripts/build.py --wheel    # also dist/mainthread_tasks-<version>-py3-none-any.whl

The zip holds one folder, ``mainthread_tasks/``: the package, ``blender_manifest.toml`` and the
LICENSE. Both of Blender's installers take that layout: the extension installer (Blender >= 4.2,
``bpy.ops.extensions.package_install_files``) finds the manifest in the single top folder (see
``pkg_zipfile_detect_subdir_or_none`` in ``bl_pkg/cli/blender_ext.py``), and the legacy installer
(``bpy.ops.preferences.addon_install``, any version) unpacks the folder into ``scripts/addons/`` where
``bl_info`` makes it an add-on. The zip is reproducible: sorted entries, fixed timestamps.

The wheel is built from ``pyproject.toml`` by setuptools (``pip wheel``) in a copy of the sources, so
nothing is written into the work tree but ``dist/``. Extensions bundle it with
``wheels = ["./wheels/<file>.whl"]`` in their manifest.

Standard library only (the wheel build uses the venv that ``scripts/_setup.py`` makes).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mainthread_tasks"
MANIFEST = ROOT / "blender_manifest.toml"
DIST = ROOT / "dist"
ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed, so that the same sources give the same zip
WHEEL_TIMEOUT = 300  # seconds


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (PACKAGE / "__init__.py").read_text(), re.M)
    if not match:
        raise SystemExit("no __version__ in mainthread_tasks/__init__.py")
    return match.group(1)


#: Parts of the package the add-on leaves out: the test kit runs outside Blender (it starts
#: Blender, pip and Xvfb), from the wheel or a checkout, never from an installed add-on.
NOT_IN_ADDON = ("testing",)


def addon_files() -> dict[str, Path]:
    """What goes into the add-on: path inside the add-on folder -> source file."""
    files = {
        path.relative_to(PACKAGE).as_posix(): path
        for path in PACKAGE.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
        and path.relative_to(PACKAGE).parts[0] not in NOT_IN_ADDON
    }
    files["blender_manifest.toml"] = MANIFEST
    files["LICENSE"] = ROOT / "LICENSE"
    return dict(sorted(files.items()))


def stage_addon(target: Path) -> Path:
    """Copy the add-on's files into ``target`` (a source folder for ``blender_ext.py build``)."""
    for name, source in addon_files().items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / name)
    return target


def build_zip(out_dir: Path = DIST) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"mainthread_tasks-{version()}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in addon_files().items():
            info = zipfile.ZipInfo(f"mainthread_tasks/{name}", ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    return target


def build_wheel(out_dir: Path = DIST, python: str | None = None) -> Path:
    """Build the wheel with setuptools from pyproject.toml; return its path in ``out_dir``."""
    if python is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _setup

        python = str(_setup.build_python())
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mainthread_tasks-wheel-") as temp:
        source = Path(temp) / "src"
        shutil.copytree(PACKAGE, source / "mainthread_tasks", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copyfile(ROOT / name, source / name)
        out = Path(temp) / "out"
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--disable-pip-version-check",
                "-q",
                "-w",
                str(out),
                str(source),
            ],
            check=True,
            timeout=WHEEL_TIMEOUT,
        )
        (built,) = out.glob("mainthread_tasks-*.whl")
        target = out_dir / built.name
        shutil.copyfile(built, target)
    return target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", action="store_true", help="also build the wheel (for add-ons that bundle it)")
    args = parser.parse_args(argv)
    print(build_zip())
    if args.wheel:
        print(build_wheel())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
