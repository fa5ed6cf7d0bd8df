"""Helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = sys.platform == "win32"

try:
    import bpy
except ImportError:  # pragma: no cover - the dev venv always has fake-bpy-module
    bpy = None


def _is_real_bpy() -> bool:
    # fake-bpy-module's bpy.app is a stub class without real values.
    if bpy is None:
        return False
    version = getattr(getattr(bpy, "app", None), "version", None)
    return isinstance(version, tuple) and len(version) == 3 and all(isinstance(v, int) for v in version)


REAL_BLENDER = _is_real_bpy()
#: Running inside the Blender executable (in the bpy wheel, binary_path is empty).
IN_BLENDER_BINARY = REAL_BLENDER and bool(bpy.app.binary_path)


def bpy_origin() -> str:
    if bpy is None:
        return "absent"
    if not REAL_BLENDER:
        return f"fake-bpy-module ({getattr(bpy, '__file__', '?')})"
    kind = "Blender binary" if IN_BLENDER_BINARY else "bpy module"
    return f"real {kind} {bpy.app.version_string}"


def python_command(script: Path) -> list[str]:
    """The command that runs ``script`` in the same kind of interpreter as this test run.

    In the Blender binary that is Blender itself in --background; elsewhere sys.executable (the
    bpy wheel's venv, or plain CPython).
    """
    if IN_BLENDER_BINARY:
        return [
            bpy.app.binary_path,
            "--background",
            "--factory-startup",
            "--python-exit-code",
            "86",
            "--python",
            str(script),
        ]
    return [sys.executable, str(script)]


def run_script(script_text: str, tmp_path: Path, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a Python script in a fresh interpreter of this tier, with the project importable.

    Fails the test (TimeoutExpired) instead of hanging.
    """
    script = tmp_path / "script.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + script_text)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONFAULTHANDLER="1")
    return run(python_command(script), timeout, env=env)


def run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run that kills the whole process group on timeout (or on any interruption, e.g. the
    per-test timeout): xvfb-run starts Xvfb and Blender as children, and killing xvfb-run alone
    would leave them running."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException as exc:
        kill_group(proc)
        stdout, stderr = proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr) from None
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def python_2_7(folder: Path) -> Path:
    """A stand-in interpreter in ``folder`` that answers the version probe as Python 2.7 does."""
    if WINDOWS:
        fake = folder / "python.bat"
        fake.write_text("@echo 2.7\n@echo C:\\nowhere\n")
    else:
        fake = folder / "python3"
        fake.write_text("#!/bin/sh\necho 2.7; echo /nowhere\n")
        fake.chmod(0o755)
    return fake


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and, on POSIX, its process group (``start_new_session=True``). Windows has no
    process groups to kill: its Job Objects hold what the library's workers start; the rest is the
    test's to end. Then reaps it and closes its pipes, so that a test that failed on it leaves no
    running process or open file for a later test's ResourceWarning."""
    if WINDOWS:
        proc.kill()
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=10)


#: How ``ProcessDied`` describes a worker that ``kill_hard`` ended.
KILLED_HARD = "exited with status 9" if WINDOWS else "killed by signal SIGKILL"


def kill_hard(pid: int) -> None:
    """End process ``pid`` at once, as a crash or the task manager would (SIGKILL; on Windows
    TerminateProcess with exit status 9). No error if it has ended already."""
    try:
        os.kill(pid, 9 if WINDOWS else signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # gone (Windows: access denied to a dead pid)
        pass
    except OSError as exc:  # Windows: the pid no longer names a process
        if getattr(exc, "winerror", None) != 87:  # ERROR_INVALID_PARAMETER
            raise


def signal_self(signum: int) -> None:
    """Send this process ``signum`` as the system does: on POSIX with kill(2); on Windows, where
    ``os.kill`` would end the process, by raising it in the calling thread, as Windows raises
    SIGINT for a Ctrl-C in the console (in a thread of its own). Call it from another thread."""
    if WINDOWS:
        signal.raise_signal(signum)
    else:
        os.kill(os.getpid(), signum)


def process_alive(pid: int) -> bool:
    """Process ``pid`` exists and has not ended (a zombie, ended but not waited for, counts as ended)."""
    if WINDOWS:
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = ctypes.c_void_p
        handle = kernel32.OpenProcess(0x00100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(ctypes.c_void_p(handle), 0) == 0x102  # WAIT_TIMEOUT
        finally:
            kernel32.CloseHandle(ctypes.c_void_p(handle))
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def load_script(name: str):
    """One of the project's commands, ``scripts/<name>.py``, loaded as a module (scripts/ is not a
    package)."""
    spec = importlib.util.spec_from_file_location(f"mainthread_tasks_{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def discard_queued() -> None:
    """End a test that leaves main-thread tasks queued on purpose: cancel them (the conftest fails
    a test that leaves any, so that a leak is found by the test that made it)."""
    from mainthread_tasks import _lifecycle

    _lifecycle.LIFECYCLE.reject_queued()


def threads() -> list[threading.Thread]:
    """The threads Python started (as ``threading.enumerate()`` lists them) but pytest-timeout's
    watchdog: where there is no SIGALRM (Windows) it times each test with a Timer thread of its own.

    A _DummyThread stands for a thread Python did not start (a test makes one on purpose); before
    3.13 it stays listed after that thread ended, until its ident is reused, which on Windows can
    take the rest of the run."""
    return [
        t
        for t in threading.enumerate()
        if not t.name.startswith("pytest_timeout ") and not isinstance(t, threading._DummyThread)
    ]


def start_thread(target, *args, name=None) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def raised_in_thread(fn, name=None, timeout=30.0):
    """Run ``fn()`` in a new ``threading.Thread`` and return what it raised (None if nothing)."""
    outcome = []

    def worker():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = start_thread(worker, name=name)
    thread.join(timeout)
    assert outcome, f"the thread did not finish in {timeout} s"
    return outcome[0]


def wait_until(predicate, timeout=10.0, step=0.001):
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(step)


@contextmanager
def fast_switching(interval: float = 1e-5):
    """Threads take turns every ``interval`` seconds instead of 5 ms: races show up within a test's time."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
