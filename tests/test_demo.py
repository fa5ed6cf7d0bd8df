"""The README's demo command works (build the add-on, install it in Blender, run the examples), and
so does the headless page's command line."""

from __future__ import annotations

import os
import shlex
import shutil

import pytest

from tests import doc_blocks, support

pytestmark = [pytest.mark.blender, pytest.mark.blender_binary]


def test_demo_command_builds_installs_and_runs(tmp_path):
    if not support.IN_BLENDER_BINARY:
        pytest.skip("runs where the Blender executable is the interpreter")
    import bpy

    python = shutil.which("python3")
    assert python, "python3 is needed to run scripts/demo.py"
    env = dict(os.environ, BLENDER=bpy.app.binary_path)
    env.pop("PYTHONPATH", None)
    # The README's command, as printed, from the top of a checkout; fewer files, and a .blend to look at.
    command = shlex.split(doc_blocks.block(doc_blocks.README, "try-it").text)
    assert command == ["python3", "scripts/demo.py"], command
    # support.run kills the whole process group on timeout: demo.py's Blender with it.
    proc = support.run(
        [python, *command[1:], "--files", "6", "--save", str(tmp_path / "demo.blend")],
        300,
        env=env,
        cwd=support.ROOT,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.rstrip().endswith("DEMO OK"), out
    # each example ran in Blender with the installed add-on, and said it did what it should
    assert out.count("installed add-on enabled: ") == 4 and "scripts/addons/mainthread_tasks" in out, out
    for example in (
        "download_demo.py (threads)",
        "async_download.py (coroutines)",
        "process_mesh.py (processes)",
        "command_server.py (a session)",
    ):
        assert f"ok     {example}" in out, out
    assert "DOWNLOAD DEMO OK" in out and "ASYNC DOWNLOAD OK" in out and "PROCESS MESH OK" in out, out
    assert out.count("6 objects created from 6 downloads in") == 2, out
    assert out.count("bpy calls made off the main thread: 0") == 3, out
    assert "threads while downloading: ['MainThread']" in out and "threads in Blender now: ['MainThread']" in out, out
    # the command server session: commands with the token, one refused without it, stopped by SIGTERM
    for line in (
        'client: ping -> {"pong": true}',
        'client: create_object {"name": "from_client", "location": [0, 0, 2]} -> {"name": "from_client"}',
        "client: ping without the token -> refused: missing or wrong token",
        "command server stopped: 5 requests answered, 1 connections refused or cut off; connection file removed: True",
    ):
        assert line in out, out
    for noise in ("Traceback", "FAILED", "was destroyed but it is pending", "Event loop is closed"):
        assert noise not in out, out
    assert (tmp_path / "demo.blend").stat().st_size > 0


def test_the_headless_pages_command_runs_as_printed(tmp_path):
    """The ``blender --background ... --python-expr "..."`` block of docs/headless.md, run as a user
    pastes it from the top of a checkout: four workers, four cubes, ``7 objects``, exit status 0."""
    if not support.IN_BLENDER_BINARY:
        pytest.skip("runs where the Blender executable is the interpreter")
    import re

    import bpy

    page = (support.ROOT / "docs" / "headless.md").read_text()
    blocks = re.findall(r"```sh\n(blender --background .*?)\n```", page, re.S)
    assert len(blocks) == 1, "the headless page's command moved: update this test"
    command = shlex.split(blocks[0])
    assert command[0] == "blender" and command[-2] == "--python-expr", command
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = support.run([bpy.app.binary_path, *command[1:]], 120, env=env, cwd=support.ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    made = sorted(re.findall(r"^worker (\d) made (\S+)$", proc.stdout, re.M))
    assert [worker for worker, _ in made] == ["0", "1", "2", "3"] and len({name for _, name in made}) == 4, out
    assert "\n7 objects\n" in proc.stdout, out
