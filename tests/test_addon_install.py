"""The install paths, in real Blender, as users take them.

- Extension (Blender >= 4.2; tiers install-5.0.1 and install-4.2.23): Blender's own
  ``blender_ext.py`` validates the zip and builds the sources; ``package_install_files`` installs
  and enables it; preferences, Reload Scripts, disable/enable, uninstall.
- Legacy add-on (tier install-legacy-3.4.1, and the bpy tiers too): ``addon_install`` +
  ``addon_utils.enable``, the same checks.
- Another add-on using the library (tests/addons/mtt_consumer): importing the installed add-on, or
  bundling the wheel built from pyproject.toml; both add-ons registered/unregistered in any order.

Each scenario runs tests/addons/install_session.py in a fresh Blender whose user folder
(``BLENDER_USER_RESOURCES``) is empty, with a timeout, and reads its JSON verdict.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import mainthread_tasks
from tests import support
from tests.addon_support import CONSUMER, ROOT, build, consumer_legacy_zip, read_outcome, session_env
from tests.support import run

SESSION = ROOT / "tests" / "addons" / "install_session.py"
SESSION_TIMEOUT = 100  # seconds, under the per-test timeout; a scenario takes a few


# -- the artefacts (no Blender needed) -----------------------------------------------------------


def test_manifest_matches_the_package():
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert manifest["id"] == "mainthread_tasks"
    assert manifest["version"] == mainthread_tasks.__version__
    assert manifest["type"] == "add-on"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert manifest["blender_version_min"] == "4.2.0"  # the oldest extension tier: bpy 4.2.23
    assert mainthread_tasks.bl_info["blender"] == (3, 4, 0)  # the oldest legacy tier: Blender 3.4.1
    assert "permissions" not in manifest, "the library opens no files, network, ...: it needs no permission"
    assert mainthread_tasks.bl_info["name"] == manifest["name"]


def test_zip_is_one_addon_folder_and_reproducible(tmp_path):
    first = build.build_zip(tmp_path / "a")
    second = build.build_zip(tmp_path / "b")
    assert first.name == f"mainthread_tasks-{mainthread_tasks.__version__}.zip"
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert all(name.startswith("mainthread_tasks/") for name in names), names
    for needed in ("__init__.py", "_blender.py", "_preferences.py", "blender_manifest.toml", "LICENSE", "py.typed"):
        assert f"mainthread_tasks/{needed}" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_build_command_prints_the_zip_path():
    python = shutil.which("python3") if support.IN_BLENDER_BINARY else sys.executable  # stdlib only
    assert python, "python3 is needed to run scripts/build.py"
    proc = subprocess.run([python, str(ROOT / "scripts" / "build.py")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == ROOT / "dist" / f"mainthread_tasks-{mainthread_tasks.__version__}.zip" and path.is_file()


# -- helpers for the real-Blender scenarios ------------------------------------------------------


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> Path:
    """The add-on zip, built by scripts/build.py into a temporary folder."""
    return build.build_zip(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from pyproject.toml (by setuptools, in the venv scripts/_setup.py makes)."""
    return build.build_wheel(tmp_path_factory.mktemp("wheel"), python=os.environ.get("MAINTHREAD_TASKS_BUILD_PYTHON"))


def _require_extensions():
    import bpy

    if bpy.app.version < (4, 2, 0):
        pytest.fail(f"extensions need Blender >= 4.2, this is {bpy.app.version_string}: run the install-<bpy> tiers")


def _blender_ext(*args: str) -> subprocess.CompletedProcess:
    """Blender's own extension tool, from this Blender's scripts (it ships inside the bpy wheel)."""
    import bpy

    tool = os.path.join(bpy.utils.system_resource("SCRIPTS"), "addons_core", "bl_pkg", "cli", "blender_ext.py")
    assert os.path.isfile(tool), f"Blender's extension tool is not at {tool}"
    return subprocess.run([sys.executable, tool, *args], capture_output=True, text=True, timeout=60)


def _valid_tags() -> str:
    import bpy

    tags = os.path.join(bpy.utils.system_resource("SCRIPTS"), "modules", "_bpy_internal", "extensions", "tags.py")
    assert os.path.isfile(tags), f"Blender's list of extension tags is not at {tags}"
    return tags


def _consumer_manifest(pkg_id: str, wheel: Path | None) -> str:
    wheels = f'wheels = ["./wheels/{wheel.name}"]\n' if wheel else ""
    return (
        'schema_version = "1.0.0"\n'
        f'id = "{pkg_id}"\n'
        'version = "0.1.0"\n'
        f'name = "Consumer {pkg_id}"\n'
        'tagline = "Test add-on that uses Main Thread Tasks"\n'
        'maintainer = "mainthread_tasks developers"\n'
        'type = "add-on"\n'
        'blender_version_min = "4.2.0"\n'
        'license = ["SPDX:GPL-3.0-or-later"]\n' + wheels
    )


def _consumer_extension(tmp_path: Path, pkg_id: str, wheel: Path | None = None) -> Path:
    """Build the consumer add-on as an extension with Blender's ``blender_ext.py build``."""
    source = tmp_path / "src" / pkg_id
    source.mkdir(parents=True)
    shutil.copyfile(CONSUMER / "__init__.py", source / "__init__.py")
    (source / "blender_manifest.toml").write_text(_consumer_manifest(pkg_id, wheel))
    if wheel:
        (source / "wheels").mkdir()
        shutil.copyfile(wheel, source / "wheels" / wheel.name)
    out = tmp_path / "built"
    out.mkdir(exist_ok=True)
    proc = _blender_ext("build", "--source-dir", str(source), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / f"{pkg_id}-0.1.0.zip"


def _reload_scripts() -> str:
    """Whether this Blender survives Reload Scripts: the bpy 4.2 module crashes at exit after
    ``bpy.ops.script.reload()`` even with no add-on installed (``python -c "import bpy;
    bpy.ops.script.reload()"`` ends with SIGSEGV), and the bpy 4.5.15 module hangs there (the
    same command never exits), so there it is left to the other tiers."""
    import bpy

    broken = not support.IN_BLENDER_BINARY and bpy.app.version[:2] in ((4, 2), (4, 5))
    return "no" if broken else "yes"


def run_session(tmp_path: Path, scenario: str, **paths: Path) -> dict:
    """Run one scenario of install_session.py in a fresh Blender with an empty user folder."""
    import bpy

    work = tmp_path / "session"
    env = session_env(work)
    script = shutil.copy(SESSION, work / "install_session.py")  # away from the repo: import what Blender installed
    result = work / "result.json"
    args = [scenario, str(result), *(f"{key}={value}" for key, value in paths.items())]
    if support.IN_BLENDER_BINARY:
        command = [
            bpy.app.binary_path,
            "--background",
            "--factory-startup",
            "--python-exit-code",
            "1",
            "--python",
            str(script),
            "--",
            *args,
        ]
    else:
        command = [sys.executable, str(script), *args]
    return read_outcome(result, run(command, SESSION_TIMEOUT, env=env, cwd=work))


# -- extension: Blender >= 4.2 (the bpy wheels) ---------------------------------------------------


@pytest.mark.blender
@pytest.mark.install_extension
def test_blender_ext_validates_the_zip_and_builds_the_sources(tmp_path, addon_zip):
    _require_extensions()
    proc = _blender_ext("validate", str(addon_zip), "--valid-tags", _valid_tags())
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr
    source = build.stage_addon(tmp_path / "src" / "mainthread_tasks")
    proc = _blender_ext("validate", str(source), "--valid-tags", _valid_tags())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tmp_path / "out").mkdir()
    proc = _blender_ext(
        "build", "--source-dir", str(source), "--output-dir", str(tmp_path / "out"), "--valid-tags", _valid_tags()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    theirs = set(zipfile.ZipFile(tmp_path / "out" / addon_zip.name).namelist())
    ours = {name.removeprefix("mainthread_tasks/") for name in zipfile.ZipFile(addon_zip).namelist()}
    assert theirs == ours  # same files; ours sit in one folder so that the legacy installer takes it too


@pytest.mark.blender
@pytest.mark.install_extension
def test_extension_install_enable_reload_disable_uninstall(tmp_path, addon_zip):
    _require_extensions()
    facts = run_session(tmp_path, "extension", zip=addon_zip, reload=_reload_scripts())
    assert facts["module"] == "bl_ext.user_default.mainthread_tasks"
    assert facts["file"].endswith("extensions/user_default/mainthread_tasks/__init__.py")


@pytest.mark.blender
@pytest.mark.install_extension
def test_other_extension_imports_the_installed_one_in_any_order(tmp_path, addon_zip):
    _require_extensions()
    consumer = _consumer_extension(tmp_path, "mtt_consumer")
    reports = run_session(tmp_path, "consumer", zip=addon_zip, consumer_zip=consumer)
    assert {r["module"] for r in reports.values()} == {"bl_ext.user_default.mainthread_tasks"}


@pytest.mark.blender
@pytest.mark.install_extension
def test_other_extension_bundling_the_wheel(tmp_path, addon_zip, wheel):
    _require_extensions()
    assert wheel.name == f"mainthread_tasks-{mainthread_tasks.__version__}-py3-none-any.whl"
    bundled = _consumer_extension(tmp_path, "mtt_consumer_bundled", wheel)
    facts = run_session(tmp_path, "bundled", zip=addon_zip, bundled_zip=bundled)
    assert "/extensions/.local/lib/" in facts["bundled_file"], facts


# -- legacy add-on: any Blender (tier install-legacy-3.4.1 runs it in 3.4.1) -----------------------


@pytest.mark.blender
@pytest.mark.install_legacy
def test_legacy_install_enable_reload_disable_and_a_consumer(tmp_path, addon_zip):
    facts = run_session(
        tmp_path, "legacy", zip=addon_zip, consumer_zip=consumer_legacy_zip(tmp_path), reload=_reload_scripts()
    )
    assert facts["module"] == "mainthread_tasks"
    assert facts["file"].endswith("scripts/addons/mainthread_tasks/__init__.py")
    assert {r["module"] for r in facts["orders"].values()} == {"mainthread_tasks"}
