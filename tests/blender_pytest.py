"""Run pytest inside the Blender binary: ``blender -b --factory-startup --python tests/blender_pytest.py -- ARGS``.

Blender's Python is not a venv; the test tools come from the folder in
``$MAINTHREAD_TASKS_BLENDER_SITE`` (scripts/_setup.py installs them there). Blender exits with
pytest's exit code.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
site = os.environ.get("MAINTHREAD_TASKS_BLENDER_SITE")
if site:
    sys.path.insert(0, site)
sys.path.insert(0, ROOT)
os.chdir(ROOT)

import pytest  # noqa: E402 - from the test-tools folder put on sys.path above

args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
sys.exit(int(pytest.main(args)))
