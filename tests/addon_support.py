"""Helpers for the tests that install the built add-on into a fresh real Blender (not fixtures).

Used by tests/test_addon_install.py and tests/test_gui.py. A session is a script that runs inside
Blender, away from the repository (so that only what Blender installed is importable), with an
empty user folder, and reports through a JSON file.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

from tests.support import load_script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "test-results"
CONSUMER = ROOT / "tests" / "addons" / "mtt_consumer"


#: scripts/build.py, the project's build command.
build = load_script("build")


def consumer_legacy_zip(folder: Path) -> Path:
    """The consumer add-on packaged for the legacy installer: ``mtt_consumer/__init__.py``."""
    target = folder / "mtt_consumer-legacy.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.write(CONSUMER / "__init__.py", "mtt_consumer/__init__.py")
    return target


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
