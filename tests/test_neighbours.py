"""joined_threads among neighbours (issue 18), in a fresh interpreter of every tier.

The library lives in a process it shares with other add-ons: their threads, their executors, their
excepthooks, and maybe a second copy of the library bundled by another add-on. tests/neighbours_session.py
puts all of them in one process run beside blocks of both copies opening and closing; nothing may
fail, hang or leak, and each failure must reach exactly the block or the hook it belongs to.
"""

from __future__ import annotations

import os

import pytest

from tests import support
from tests.addon_support import read_outcome

SESSION = support.ROOT / "tests" / "neighbours_session.py"
SECONDS = 3.0  # of neighbours and blocks side by side
TIMEOUT = 90  # seconds for the whole interpreter: start (Blender's too), the session, the exit


@pytest.mark.timeout(TIMEOUT + 20)
def test_two_copies_other_threads_executors_and_excepthooks_side_by_side(tmp_path):
    result = tmp_path / "result.json"
    args = [str(result), str(SECONDS), str(support.ROOT), *(["real"] if support.REAL_BLENDER else [])]
    command = support.python_command(SESSION)
    command += ["--", *args] if support.IN_BLENDER_BINARY else args
    proc = support.run(command, TIMEOUT, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
    facts = read_outcome(result, proc)
    assert "Exception" not in proc.stderr, proc.stderr[-6000:]  # e.g. "Exception in thread", "Exception ignored"
    assert facts["blocks"] > 50 and facts["outsider_failures"] > 20, facts
