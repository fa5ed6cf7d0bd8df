#!/usr/bin/env python3
"""The main job: build the installable add-on, install it into a headless Blender, run the demo.

    python3 scripts/demo.py [--files N] [--save out.blend]
    BLENDER=/path/to/blender python3 scripts/demo.py

Builds ``dist/mainthread_tasks-<version>.zip``, installs it as an add-on into a throw-away user
folder of Blender (``$BLENDER``, else ``blender`` on PATH, else Debian's package installed with
apt-get), enables it, and runs ``examples/download_demo.py`` in ``blender --background``: worker
threads download files from a local HTTP server and every bpy call runs on the main thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _setup  # noqa: E402
import build  # noqa: E402

ROOT = _setup.ROOT

# Runs inside Blender before the demo: install the zip like Preferences > Add-ons > Install, enable it.
INSTALL_AND_RUN = r"""
import sys, runpy, addon_utils, bpy
zip_path, demo, *demo_args = sys.argv[sys.argv.index("--") + 1:]
bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
addon_utils.enable("mainthread_tasks", default_set=True, handle_error=None)
import mainthread_tasks
assert addon_utils.check("mainthread_tasks")[1], "the add-on did not enable"
print(f"installed add-on enabled: {mainthread_tasks.__file__}", flush=True)
sys.argv = [demo, "--", *demo_args]
try:
    runpy.run_path(demo, run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
addon_utils.disable("mainthread_tasks", default_set=True)
sys.exit(code)
"""


def main(argv: list[str]) -> int:
    zip_path = build.build_zip()
    print(f"built {zip_path.relative_to(ROOT)}", flush=True)
    blender = _setup.blender_executable()
    with tempfile.TemporaryDirectory(prefix="mainthread_tasks-demo-") as user_dir:
        env = dict(os.environ, BLENDER_USER_SCRIPTS=str(Path(user_dir) / "scripts"),
                   BLENDER_USER_CONFIG=str(Path(user_dir) / "config"))
        env.pop("PYTHONPATH", None)
        command = [blender, "--background", "--factory-startup", "--python-exit-code", "1",
                   "--python-expr", INSTALL_AND_RUN, "--", str(zip_path),
                   str(ROOT / "examples" / "download_demo.py"), *argv]
        print(f"running the demo in {blender} --background", flush=True)
        try:
            return subprocess.run(command, env=env, cwd=user_dir, timeout=300).returncode
        except subprocess.TimeoutExpired:
            print("DEMO FAILED: Blender did not finish within 300 s", flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
