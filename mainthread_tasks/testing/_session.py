"""The script the launcher runs inside Blender (``blender --python _session.py``, or the bpy
module's ``python _session.py``): pytest with the kit's plugin, then exit with pytest's status.

What to run comes from the session file named by ``$MAINTHREAD_TASKS_TESTING_SESSION`` (written
by ``_sessions``): the pytest arguments, the folders that hold pytest for this Python, the mode. In
the UI (mode ``gui``) the run starts from a timer once Blender's event loop runs, so that the
window, its screen and areas exist as a user sees them.

Runs as ``__main__``, so it imports nothing of the package before it has made the package
importable: the kit's ``mainthread_tasks`` is loaded from the folder this file is in, without
putting that folder's parent (perhaps a site-packages of another Python version) on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

#: Exit status when the run could not even start (pytest's own "internal error").
INTERNAL_ERROR = 3


def _load_kit() -> None:
    package = Path(__file__).resolve().parent.parent
    if "mainthread_tasks" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "mainthread_tasks", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mainthread_tasks"] = module
    spec.loader.exec_module(module)


def _run(config: dict[str, Any]) -> int:
    sys.path[:0] = [os.getcwd()]  # as `python -m pytest` has it: your own modules import
    sys.path.extend(config["sys_path"])  # pytest; after Blender's own modules, never before them
    _load_kit()
    import pytest

    from mainthread_tasks.testing import plugin

    return int(pytest.main(config["args"], plugins=[plugin]))


def _exit(code: int, hard: bool) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    if hard:
        # From inside a timer callback Blender would print SystemExit as an error; os._exit ends
        # it with the status. pytest has written its reports (and coverage its data) by now.
        os._exit(code)
    sys.exit(code)


def main() -> None:
    config = json.loads(Path(os.environ["MAINTHREAD_TASKS_TESTING_SESSION"]).read_text())
    if config["mode"] == "module":
        import bpy  # Blender as a module: loaded before anything else, as its users do

    def run(hard: bool) -> None:
        try:
            code = _run(config)
        except BaseException:  # noqa: BLE001 - whatever it was, say it and end with a status
            traceback.print_exc()
            code = INTERNAL_ERROR
        _exit(code, hard)

    if config["mode"] != "gui":
        run(hard=False)
        return
    import bpy

    def start() -> None:
        run(hard=True)

    # persistent: the per-test fresh scene loads a file while this very timer runs.
    bpy.app.timers.register(start, first_interval=0.1, persistent=True)


if __name__ == "__main__":
    main()
