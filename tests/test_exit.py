"""At interpreter exit nothing hangs: blocked workers get SchedulerStopped and the process ends.

Each case runs a fresh interpreter of this tier (Blender --background in the Blender tier) with a
timeout, so a hang fails the test instead of wedging the run.
"""

from __future__ import annotations

import time

from tests.support import run_script

BLOCKED_AT_EXIT = r"""
import threading, time
import mainthread_tasks as mt

outcome = []

def worker():
    try:
        mt.call_on_main(print, "this never runs: nobody pumps")
        outcome.append("ran")
    except mt.SchedulerStopped as exc:
        outcome.append("stopped")
        print("WORKER GOT SchedulerStopped:", exc, flush=True)

t = threading.Thread(target=worker)   # non-daemon: Python joins it at exit
t.start()
while mt.stats().pending == 0:
    time.sleep(0.001)
print("SCRIPT ENDS WITH A BLOCKED WORKER", flush=True)
"""


def _run_to_a_clean_exit(script, tmp_path, *lines):
    """Run ``script`` in a fresh interpreter; it must print every one of ``lines`` and exit 0."""
    proc = run_script(script, tmp_path, timeout=90)
    out = proc.stdout + proc.stderr
    for line in lines:
        assert line in out, out
    assert proc.returncode == 0, out
    return out


def test_script_end_with_a_worker_blocked_in_call_on_main(tmp_path):
    started = time.monotonic()
    _run_to_a_clean_exit(BLOCKED_AT_EXIT, tmp_path, "SCRIPT ENDS WITH A BLOCKED WORKER", "WORKER GOT SchedulerStopped")
    assert time.monotonic() - started < 60


SUBMIT_AFTER_EXIT = r"""
import threading, time
import mainthread_tasks as mt

def worker():
    for i in range(100000):
        try:
            mt.post_on_main(int)
            f = mt.run_on_main(int)
        except mt.SchedulerStopped:
            print("PRODUCER STOPPED CLEANLY", flush=True)
            return
        time.sleep(0.0001)

threading.Thread(target=worker).start()
time.sleep(0.05)
print("SCRIPT ENDS WHILE A PRODUCER SUBMITS", flush=True)
"""


def test_script_end_while_a_producer_keeps_submitting(tmp_path):
    _run_to_a_clean_exit(SUBMIT_AFTER_EXIT, tmp_path, "PRODUCER STOPPED CLEANLY")


IMPORT_IS_INERT = r"""
import sys, threading
before = threading.active_count()
had_bpy = "bpy" in sys.modules
import mainthread_tasks
assert threading.active_count() == before, "import started a thread"
if not had_bpy:
    assert "bpy" not in sys.modules, "import imported bpy"
if had_bpy:
    import bpy
    assert not bpy.app.timers.is_registered(mainthread_tasks._blender._drain_timer), "import registered a timer"
print("IMPORT IS INERT", flush=True)
"""


def test_import_starts_no_thread_and_touches_no_bpy(tmp_path):
    _run_to_a_clean_exit(IMPORT_IS_INERT, tmp_path, "IMPORT IS INERT")


EXECUTOR_BLOCKED_AT_EXIT = r"""
import asyncio, concurrent.futures, sys, threading
import mainthread_tasks as mt

def needs_main():
    try:
        mt.call_on_main(print, "this never runs: nobody pumps")
    except mt.SchedulerStopped:
        sys.stdout.write("EXECUTOR THREAD GOT SchedulerStopped\n")  # one write: two threads print at once

# concurrent.futures.thread is imported (and registers its own join of the executors' threads at
# exit) only after the library: Python runs such exit hooks in reverse order.
executor = concurrent.futures.ThreadPoolExecutor(1)
executor.submit(needs_main)

async def coroutine():
    asyncio.get_running_loop().run_in_executor(None, needs_main)  # asyncio's default executor
    await asyncio.sleep(0)

loop = asyncio.new_event_loop()
loop.run_until_complete(coroutine())
while mt.stats().pending < 2:
    pass
print("SCRIPT ENDS WITH EXECUTOR THREADS BLOCKED", flush=True)
"""


def test_script_end_with_executor_threads_blocked_in_call_on_main(tmp_path):
    """Executor threads (a ThreadPoolExecutor made after the import, asyncio's default executor)
    blocked in call_on_main: the library releases them before concurrent.futures joins them."""
    out = _run_to_a_clean_exit(EXECUTOR_BLOCKED_AT_EXIT, tmp_path, "SCRIPT ENDS WITH EXECUTOR THREADS BLOCKED")
    assert out.count("EXECUTOR THREAD GOT SchedulerStopped\n") == 2, out


# -- the tests' own helpers ----------------------------------------------------------------


def test_run_script_uses_the_process_group_killer(tmp_path):
    # tests/support.run_script runs through support.run (kills Xvfb/Blender children too).
    proc = run_script("print('ok')", tmp_path)
    assert proc.returncode == 0 and "ok" in proc.stdout
