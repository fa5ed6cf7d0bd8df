"""``python3 -m mainthread_tasks.testing [--blender PATH]... [--addon PATH]... [pytest args]``: see ``_launch``."""

from __future__ import annotations

import sys

from ._launch import main

if __name__ == "__main__":
    sys.exit(main())
