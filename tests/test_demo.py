"""The README's main command works: build the add-on, install it in Blender, run the demo."""

from __future__ import annotations

import os
import shutil

import pytest

from tests import support

pytestmark = [pytest.mark.blender, pytest.mark.blender_binary]


def test_demo_command_builds_installs_and_runs(tmp_path):
    if not support.IN_BLENDER_BINARY:
        pytest.skip("runs where the Blender executable is the interpreter")
    import bpy

    python = shutil.which("python3")
    assert python, "python3 is needed to run scripts/demo.py"
    env = dict(os.environ, BLENDER=bpy.app.binary_path)
    env.pop("PYTHONPATH", None)
    # support.run kills the whole process group on timeout: demo.py's Blender with it.
    proc = support.run(
        [python, str(support.ROOT / "scripts" / "demo.py"), "--files", "6", "--save", str(tmp_path / "demo.blend")],
        300, env=env, cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "DEMO OK" in out, out
    assert "installed add-on enabled" in out and "scripts/addons/mainthread_tasks" in out, out
    assert "6 objects created from 6 downloads" in out, out
    assert "bpy calls made off the main thread: 0" in out, out
    assert (tmp_path / "demo.blend").stat().st_size > 0
