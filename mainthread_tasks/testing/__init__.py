"""The test kit for add-on authors: your pytest suite in real Blender (docs/testing.md).

Outside Blender, from any Python 3.10+::

    python3 -m mainthread_tasks.testing [--blender PATH]... [--addon PATH]... [pytest args]

runs the suite inside each Blender, with the add-ons installed into a temporary user folder (your
own preferences are never read or written), and exits with pytest's exit code. Inside Blender the
kit's pytest plugin (loaded by the launcher) fires ``bpy.app.timers`` during ``pump_until``, fails
a test that leaks threads, queued work, timers or handlers or whose background errors were only
printed, gives every test a fresh scene, runs ``@pytest.mark.gui`` tests in Blender's real UI, and
reports a test that crashed Blender while the others still run.

This module imports nothing but the standard library: ``pump_until`` works in any script inside
Blender, and importing ``mainthread_tasks`` itself never imports the kit.
"""

from __future__ import annotations

from ._pump import pump_until

__all__ = ("pump_until",)
