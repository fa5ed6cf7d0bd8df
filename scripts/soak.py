#!/usr/bin/env python3
"""Run one pytest selection many times in fresh interpreters; count passes, failures and crashes.

    python3 scripts/soak.py --runs 30 -- tests/test_stress.py tests/test_interrupts.py tests/test_fuzz.py
    python3 scripts/soak.py --runs 30 --python ~/.cache/mainthread_tasks/venv-dev-*/bin/python -- -m "not blender" tests

A crash is a run whose interpreter died by a signal (pytest's own exit status, not core files:
worker processes that kill themselves on purpose leave those too). Core dumps are enabled for the
runs (``ulimit -c unlimited``) so a crash can be read with gdb afterwards. Exit status: 1 if any run
crashed or failed.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _setup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--python", help="the interpreter (default: the dev venv's, CPython 3.11)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("pytest_args", nargs="*", help="after --: what pytest gets")
    args = parser.parse_args()
    python = args.python or str(_setup.dev_python())
    command = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args.pytest_args]
    env = dict(os.environ, MAINTHREAD_TASKS_TIER="cpython", PYTHONFAULTHANDLER="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    _setup.let_children_take_ctrl_c()
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print(f"$ {_setup.shown(command)}  (x{args.runs})", flush=True)
    outcomes: dict[str, int] = {"passed": 0, "failed": 0, "crashed": 0, "timed out": 0}
    started = time.monotonic()
    for run in range(1, args.runs + 1):
        begun = time.monotonic()
        try:
            proc = subprocess.run(
                command, env=env, cwd=_setup.ROOT, capture_output=True, text=True, timeout=args.timeout
            )
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired as exc:
            code, proc = None, exc  # type: ignore[assignment]
        if code is None:
            outcome = "timed out"
        elif code < 0:
            outcome = "crashed"
        else:
            outcome = "passed" if code == 0 else "failed"
        outcomes[outcome] += 1
        detail = ""
        if code is not None and code < 0:
            detail = f" ({signal.Signals(-code).name})"
        if outcome != "passed":
            log = _setup.ROOT / "test-results" / "soak" / f"run-{run}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text((proc.stdout or "") + (proc.stderr or ""))
            tail = (proc.stdout or "")[-2000:] + (proc.stderr or "")[-2000:]
            print(f"{tail}\n(the whole output: {log})", flush=True)
        print(f"run {run:3d}: {outcome}{detail} in {time.monotonic() - begun:.1f} s", flush=True)
    total = time.monotonic() - started
    print(", ".join(f"{n} {name}" for name, n in outcomes.items()) + f" in {args.runs} runs, {total / 60:.1f} min")
    return 0 if outcomes["passed"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
