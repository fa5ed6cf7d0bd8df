"""What the launcher's modules share: the session script, exit statuses, time limits, KitError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KIT_DIR = Path(__file__).resolve().parent
SESSION_SCRIPT = KIT_DIR / "_session.py"
SESSION_ENV = "MAINTHREAD_TASKS_TESTING_SESSION"  # the plugin's name for it (plugin.SESSION_ENV)
#: How faulthandler's dump_traceback_later (the plugin's --test-timeout) starts its dump.
TIMEOUT_DUMP = "Timeout ("

#: pytest's exit statuses the launcher uses itself.
OK, TESTS_FAILED, INTERRUPTED, INTERNAL_ERROR, USAGE_ERROR, NO_TESTS = 0, 1, 2, 3, 4, 5

DEFAULT_TEST_TIMEOUT = 600.0  #: seconds: a test that runs longer is stopped like a crash
PROBE_TIMEOUT = 120.0  #: seconds for Blender to say its versions
EXIT_GRACE = 60.0  #: seconds Blender may take to quit after pytest finished
PIP_TIMEOUT = 600.0
XVFB_SCREEN = "1280x720x24"

#: pytest, at least the version whose hook wrappers the plugin uses.
PYTEST_REQUIREMENT = "pytest>=8.0"


class KitError(Exception):
    """Something the launcher needs is missing; the message says what to do."""


def _say(message: str) -> None:
    print(f"[mainthread_tasks.testing] {message}", flush=True)


@dataclass
class Options:
    blenders: list[str]
    addons: list[Path]
    requirements: list[str]
    test_timeout: float
    xvfb: bool
    pytest_args: list[str]
    junitxml: Path | None
