"""A real Dask cluster for the tests (tests/test_cluster.py, the GUI session's cluster step).

``Cluster`` starts ``tests/dask_cluster.py`` (a LocalCluster: scheduler and 2 worker processes on
127.0.0.1) with the interpreter that has ``distributed`` (``dask_python_path``), in a process session
of its own, and kills that session on ``close()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from tests import support
from tests.support import ROOT

#: Dask retries a task whose worker died; the test cluster gives up after the second death.
ALLOWED_FAILURES = 1


def dask_python_path() -> str:
    python = os.environ.get("MAINTHREAD_TASKS_DASK_PYTHON", "")
    if python:
        return python
    if support.REAL_BLENDER:
        pytest.fail("MAINTHREAD_TASKS_DASK_PYTHON is not set: run the tier through scripts/run_tests.py")
    return str(support.load_script("_setup").dask_python())  # a bare pytest run on the host: build it


class Cluster:
    """A LocalCluster in a process session of its own (``tests/dask_cluster.py``)."""

    def __init__(self, python: str) -> None:
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),  # the workers import the tasks' module, tests.process_work
            DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=str(ALLOWED_FAILURES),
            DASK_LOGGING__DISTRIBUTED="error",
        )
        self.proc = subprocess.Popen(
            [python, str(ROOT / "tests" / "dask_cluster.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        line = _readline(self.proc, 90)
        info = json.loads(line)
        self.address: str = info["address"]
        self.workers: list[int] = info["workers"]
        self.pid: int = info["pid"]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        support.kill_group(self.proc)
        self.proc.wait(15)
        self.proc.stdout.close()


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0]:
        support.kill_group(proc)
        raise AssertionError(f"the Dask cluster did not start within {timeout} s (exit {proc.poll()})")
    return lines[0]
