"""Installing the launcher's ``--addon``s into Blender's (temporary) user folder, and enabling them.

- Blender >= 4.2 and the add-on has a ``blender_manifest.toml`` (in its folder, or at the top of its
  zip or of the zip's one folder): an extension of the ``user_default`` repository, module
  ``bl_ext.user_default.<id>``. A zip goes through Blender's own installer
  (``bpy.ops.extensions.package_install_files``: it also installs the manifest's wheels).
- Otherwise a legacy add-on in ``<user scripts>/addons``, module ``<folder name>`` (or the ``.py``
  file's name, or the zip's top folder).

A folder is linked, not copied (a symbolic link where the system allows one): the code that runs is
your source tree's, so coverage and tracebacks name your files. Runs inside Blender; the user
folder is the temporary one the launcher made (``BLENDER_USER_RESOURCES``), never yours.
"""

from __future__ import annotations

import os
import re
import shutil
import traceback
import zipfile
from pathlib import Path
from typing import Any

__all__ = ("AddonError", "enable_addons", "enabled")

#: The modules of the add-ons enabled so far.
enabled: list[str] = []

EXTENSION_REPO = "user_default"


class AddonError(Exception):
    """An ``--addon`` could not be installed or enabled; the message says why."""


def enable_addons(paths: list[str]) -> None:
    import bpy

    # Nothing the tests do to the preferences may be saved (into the temporary folder, even).
    preferences: Any = bpy.context.preferences  # Any: bpy's objects at the boundary
    preferences.use_preferences_save = False
    for path in paths:
        enabled.append(_install_and_enable(Path(path)))


def _manifest_id(path: Path) -> str | None:
    """The extension id from the add-on's blender_manifest.toml, or None if it has none."""
    text = None
    if path.is_dir():
        manifest = path / "blender_manifest.toml"
        text = manifest.read_text(encoding="utf-8") if manifest.is_file() else None
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("blender_manifest.toml") and n.count("/") <= 1]
            text = archive.read(names[0]).decode("utf-8") if names else None
    if text is None:
        return None
    match = re.search(r'^\s*id\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise AddonError(f'{path}: blender_manifest.toml has no id = "..." line')
    return match.group(1)


def _install_and_enable(path: Path) -> str:
    import bpy

    if not path.exists():
        raise AddonError(f"--addon {path}: no such file or folder")
    extension_id = _manifest_id(path) if bpy.app.version >= (4, 2, 0) else None
    if extension_id is not None:
        module = _install_extension(path, extension_id)
    else:
        module = _install_legacy(path)
    _enable(module, path)
    return module


def _link(source: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise AddonError(f"{target} exists already: two --addon with the same name?")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source, target, target_is_directory=source.is_dir())
    except OSError:  # Windows without the right to make links: a copy
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, target)


def _install_legacy(path: Path) -> str:
    import bpy

    addons = Path(bpy.utils.user_resource("SCRIPTS", path="addons", create=True))
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise AddonError(f"--addon {path}: a folder add-on needs an __init__.py")
        _link(path, addons / path.name)
        module = path.name
    elif path.suffix == ".py":
        _link(path, addons / path.name)
        module = path.stem
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            tops = {name.split("/")[0] for name in archive.namelist()}
            archive.extractall(addons)
        packages = [top for top in tops if (addons / top / "__init__.py").is_file()]
        singles = [top[:-3] for top in tops if top.endswith(".py")]
        if len(packages) + len(singles) != 1:
            raise AddonError(f"--addon {path}: the zip must hold one add-on (a folder or a .py), found {sorted(tops)}")
        module = (packages or singles)[0]
    else:
        raise AddonError(f"--addon {path}: not a folder, a .py file or a zip")
    bpy.utils.refresh_script_paths()  # the user add-ons folder may not have existed at start-up
    return module


def _install_extension(path: Path, extension_id: str) -> str:
    import bpy

    preferences: Any = bpy.context.preferences
    repos = preferences.extensions.repos
    repo = next((r for r in repos if r.module == EXTENSION_REPO), None)
    if repo is None:
        raise AddonError(f"Blender {bpy.app.version_string} has no {EXTENSION_REPO!r} extension repository")
    module = f"bl_ext.{EXTENSION_REPO}.{extension_id}"
    if path.is_dir():
        _link(path, Path(repo.directory) / extension_id)
        bpy.ops.extensions.repo_refresh_all()
    else:
        result = bpy.ops.extensions.package_install_files(
            filepath=str(path), repo=EXTENSION_REPO, enable_on_install=False
        )
        if result != {"FINISHED"}:
            raise AddonError(f"--addon {path}: Blender's extension installer said {result} (its messages are above)")
    return module


def _enable(module: str, path: Path) -> None:
    import addon_utils

    failures: list[BaseException] = []
    utils: Any = addon_utils  # fake-bpy-module types enable() as returning nothing; it returns the module
    if utils.enable(module, default_set=True, handle_error=failures.append) is None or failures:
        detail = "".join(traceback.format_exception(failures[0])) if failures else "(no error was given)"
        raise AddonError(f"--addon {path}: enabling {module} failed\n{detail}")
