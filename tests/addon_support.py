"""Helpers for the tests that install the built add-on into a fresh real Blender (not fixtures).

Used by tests/test_addon_install.py and tests/test_gui.py. A session is a script that runs inside
Blender, away from the repository (so that only what Blender installed is importable), with an
empty user folder, and reports through a JSON file.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

from tests.support import load_script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "test-results"
CONSUMER = ROOT / "tests" / "addons" / "mtt_consumer"


#: scripts/build.py, the project's build command.
build = load_script("build")


def legacy_zip(source: Path, folder: Path) -> Path:
    """The add-on folder ``source`` packaged for the legacy installer: its top-level modules, as
    ``<name>/<module>.py`` (its tests stay out)."""
    target = folder / f"{source.name}-legacy.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for module in sorted(source.glob("*.py")):
            archive.write(module, f"{source.name}/{module.name}")
    return target


def consumer_legacy_zip(folder: Path) -> Path:
    """The consumer add-on packaged for the legacy installer: ``mtt_consumer/__init__.py``."""
    return legacy_zip(CONSUMER, folder)


#: Xvfb's screen for the GUI sessions.
SCREEN = "-screen 0 1280x720x24"


def ui_session_command(work: Path, script: Path, *args: str, flags: tuple[str, ...] = ()) -> list[str]:
    """This Blender's UI under Xvfb, its framebuffer written into ``work`` (for screenshots), running
    ``script`` with ``args`` after ``--``; ``flags`` go to Blender before ``--python``."""
    import bpy

    xvfb_run = shutil.which("xvfb-run")
    assert xvfb_run, "xvfb-run is missing: apt-get install xvfb xauth (scripts/run_tests.py does)"
    return [
        xvfb_run,
        "-a",
        "-s",
        f"{SCREEN} -fbdir {work}",
        bpy.app.binary_path,
        "--factory-startup",
        *flags,
        "--python",
        str(script),
        "--",
        *args,
    ]


def session_env(work: Path) -> dict[str, str]:
    """Environment for a Blender whose user folder is ``work/user`` (created empty)."""
    (work / "user").mkdir(parents=True)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(work / "user"), TMPDIR=str(work), PYTHONFAULTHANDLER="1")
    env.pop("PYTHONPATH", None)
    return env


def read_outcome(result: Path, proc: subprocess.CompletedProcess) -> dict:
    """The facts a session wrote to ``result``; fails with its output unless it passed and exited 0."""
    out = f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    assert result.exists(), f"the session wrote no result (exit code {proc.returncode}):\n{out}"
    outcome = json.loads(result.read_text())
    assert outcome["ok"], f"{outcome.get('error', '')}\n{out}"
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{out}"
    assert "Traceback" not in proc.stderr, out  # e.g. an exception Blender printed and carried on
    return outcome["facts"]


def xwd_to_png(source: Path, target: Path, box: tuple[int, int, int, int] | None = None) -> None:
    """Write the screen dump ``source`` (XWD, 24-bit TrueColor: Xvfb's ``-fbdir`` file) as a PNG;
    only the rectangle ``box`` (left, top, width, height, in pixels from the top left) if given."""
    data = source.read_bytes()
    header = struct.unpack(">25I", data[:100])
    size, depth, width, height, byte_order, bits_per_pixel, line_bytes, colours = (
        header[0],
        header[3],
        header[4],
        header[5],
        header[7],
        header[11],
        header[12],
        header[19],
    )
    assert depth == 24 and bits_per_pixel == 32, f"{source}: depth {depth}, {bits_per_pixel} bits per pixel"
    start = size + 12 * colours
    if box is not None:
        left, top, box_width, box_height = box
        assert 0 <= left and 0 <= top and left + box_width <= width and top + box_height <= height, (box, width, height)
        start += top * line_bytes + 4 * left
        width, height = box_width, box_height
    channels = (2, 1, 0) if byte_order == 0 else (1, 2, 3)  # where R, G, B sit in a pixel: LSBFirst is B G R x
    rows = bytearray()
    for y in range(height):
        line = data[start + y * line_bytes : start + y * line_bytes + 4 * width]
        row = bytearray(3 * width)
        for i, channel in enumerate(channels):
            row[i::3] = line[channel::4]
        rows += b"\0" + row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    target.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )
