"""Reliability: randomized load with lifecycle races, faults, leaks, and the security rules.

Invariant everywhere: every accepted task ran exactly once on the main thread, or its Future was
cancelled / its caller got SchedulerStopped / (post_on_main) it was counted as dropped; per-thread
order holds; no thread is left blocked.
"""

from __future__ import annotations

import ast
import collections
import concurrent.futures as cf
import gc
import random
import threading
import time
import tracemalloc
import weakref

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _blender
from tests.support import ROOT, start_thread

THREADS = 16
OPS_PER_THREAD = 2000


@pytest.mark.allow_errors("logged", reason="random tasks fail on purpose; the counts are checked")
@pytest.mark.parametrize("seed", [1, 2, 3])  # 16 threads x 2,000 random operations each
def test_randomized_load_with_register_unregister_races(seed):
    main = threading.main_thread()
    ran: collections.Counter = collections.Counter()  # (tag, n) -> runs; main thread only
    run_order: dict[int, list[int]] = collections.defaultdict(list)
    off_main = []
    children: list[cf.Future] = []  # submitted by tasks, on the main thread
    child_runs = collections.Counter()
    outcomes: dict[int, list] = {}

    def child(key):
        child_runs[key] += 1

    def task(tag, n, fail, spawn):
        if threading.current_thread() is not main:
            off_main.append((tag, n))
        ran[(tag, n)] += 1
        run_order[tag].append(n)
        if spawn:
            try:
                children.append(mt.run_on_main(child, (tag, n)))
            except mt.SchedulerStopped:
                pass  # stopped while this task ran: refused, nothing queued
        if fail:
            raise ValueError(n)
        return n

    def worker(tag):
        rng = random.Random(seed * 1000 + tag)
        mine = outcomes[tag] = []
        for n in range(OPS_PER_THREAD):
            if n % 20 == 0:
                time.sleep(0.001)  # spread the load so that stops land all through it
            fail, spawn = rng.random() < 0.1, rng.random() < 0.1
            op = rng.choice(("post", "run", "run_cancel", "run_wait", "call"))
            try:
                if op == "post":
                    mt.post_on_main(task, tag, n, fail, spawn)
                    mine.append(("post", n, None))
                elif op == "call":
                    try:
                        mt.call_on_main(task, tag, n, fail, spawn)
                        mine.append(("call", n, "returned"))
                    except ValueError:
                        mine.append(("call", n, "raised"))
                else:
                    future = mt.run_on_main(task, tag, n, fail, spawn)
                    if op == "run_cancel":
                        future.cancel()
                    elif op == "run_wait":
                        try:
                            future.result(timeout=rng.choice((0, 0.0005, 0.01)))
                        except (cf.TimeoutError, cf.CancelledError, ValueError):
                            pass
                    mine.append(("run", n, future))
            except mt.SchedulerStopped:
                mine.append((op, n, "refused"))

    mt.register()
    threads = [start_thread(worker, tag, name=f"load-{tag}") for tag in range(THREADS)]
    rng = random.Random(seed)
    cycles = 0
    while any(t.is_alive() for t in threads):
        mt.pump(0.001)
        if rng.random() < 0.3:
            mt.unregister()  # stop: queued work is cancelled, callers get SchedulerStopped
            time.sleep(rng.choice((0, 0.0005, 0.002)))
            mt.register()
            cycles += 1
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    mt.pump()
    mt.unregister()

    assert off_main == []
    assert cycles > 20, cycles
    dropped_posts = 0
    cancelled_futures = 0
    for tag, mine in outcomes.items():
        assert len(mine) == OPS_PER_THREAD
        order = run_order[tag]
        assert order == sorted(order), f"thread {tag}: per-thread order broken"
        for op, n, outcome in mine:
            runs = ran[(tag, n)]
            if outcome == "refused":
                assert runs == 0
            elif op == "post":
                assert runs in (0, 1)
                dropped_posts += runs == 0
            elif op == "call":
                # returned/raised means it ran; SchedulerStopped means it did not ("refused" above)
                assert runs == 1
            else:
                future = outcome
                assert future.done(), f"future of task {(tag, n)} never finished"
                if future.cancelled():
                    cancelled_futures += 1
                    assert runs == 0
                else:
                    assert runs == 1
                    if future.exception() is None:
                        assert future.result() == n
    assert all(count == 1 for count in ran.values())
    for future in children:
        assert future.done()
        cancelled_futures += future.cancelled()
    assert all(count == 1 for count in child_runs.values())
    # A call_on_main that got SchedulerStopped was either refused at submit or cancelled while queued.
    stopped_calls = sum(
        1 for mine in outcomes.values() for op, _, outcome in mine if op == "call" and outcome == "refused"
    )
    s = mt.stats()
    assert s.pending == 0
    assert cancelled_futures + dropped_posts <= s.cancelled <= cancelled_futures + dropped_posts + stopped_calls
    assert s.submitted == s.completed + s.failed + s.cancelled
    assert s.completed + s.failed == sum(ran.values()) + sum(child_runs.values())


def test_no_growth_after_a_million_tasks_and_100_register_cycles(timers):
    def burst(total):
        def producer(count):
            post, run = mt.post_on_main, mt.run_on_main
            for _ in range(count // 2):
                post(int)
                run(int)

        threads = [start_thread(producer, total // 4) for _ in range(4)]
        while any(t.is_alive() for t in threads) or mt.stats().pending:
            mt.pump(0.01)
        for t in threads:
            t.join(30)

    burst(100_000)  # warm up caches and free lists
    gc.collect()
    threads_before = threading.active_count()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        burst(1_000_000)
        for _ in range(100):
            mt.register()
            mt.unregister()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    s = mt.stats()
    assert s.completed == 1_100_000 and s.pending == 0
    assert grown < 256 * 1024, f"memory grew by {grown} bytes"
    assert threading.active_count() == threads_before
    assert not timers.is_registered(_blender._drain_timer)
    if hasattr(timers, "fake"):
        assert timers.fake.registered == []


def test_a_task_that_runs_for_seconds_is_logged_and_nothing_else_is_lost(caplog):
    def render_frame_synchronously():
        time.sleep(1.2)

    ran = []

    def worker():
        mt.post_on_main(render_frame_synchronously)
        for i in range(100):
            mt.post_on_main(ran.append, i)
            time.sleep(0.005)  # keeps submitting while the main thread is stuck in the slow task
        ran.append(mt.call_on_main(lambda: "after"))

    with mt.joined_threads(timeout=60) as scope:
        scope.start(worker)
    assert ran == list(range(100)) + ["after"]
    s = mt.stats()
    assert s.slow_tasks == 1 and s.longest_task >= 1.2
    assert "render_frame_synchronously" in s.longest_task_name
    (record,) = [r for r in caplog.records if "blocked the main thread" in r.getMessage()]
    assert "render_frame_synchronously" in record.getMessage()


def test_worker_dying_right_after_submitting_loses_nothing():
    ran = []
    refs = []

    def worker():
        future = mt.run_on_main(ran.append, "future task")
        refs.append(weakref.ref(future))
        del future  # the traceback of the error below must not keep it alive
        mt.post_on_main(ran.append, "posted task")
        raise RuntimeError("worker died")

    with pytest.raises(ExceptionGroup):
        with mt.joined_threads(timeout=30) as scope:
            scope.start(worker)
    mt.pump()
    assert ran == ["future task", "posted task"]
    gc.collect()
    assert refs[0]() is None, "a finished, unreferenced Future must be freed"


def test_recursion_error_in_nested_waits_is_contained():
    futures = []

    def chain(n):
        if n == 0:
            return 0
        futures.append(mt.run_on_main(chain, n - 1))
        return futures[-1].result(timeout=30) + 1

    # Deeper than the recursion limit allows: the innermost waits fail with RecursionError.
    future = mt.run_on_main(chain, 5000)
    mt.pump()
    assert isinstance(future.exception(0), RecursionError)
    # The dispatcher survived: the task queued last when the stack ran out is still queued, runs
    # at the next pumps (recursing again from a shallow stack) and the chain ends.
    for _ in range(50):
        if not mt.pump():
            break
    assert mt.stats().pending == 0
    assert all(f.done() for f in futures), "a future was left running"
    later = mt.run_on_main(lambda: "after")
    mt.pump()
    assert later.result(0) == "after"


@pytest.mark.blender
def test_tasks_pending_across_file_new():
    import bpy

    obj = bpy.data.objects.new("mt_stale", None)
    stale = mt.run_on_main(lambda: obj.name)  # touches data that File > New frees
    fresh = mt.run_on_main(lambda: len(bpy.data.objects))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert mt.pump() == 2
    assert isinstance(stale.exception(0), ReferenceError)  # an error in its Future, not a crash
    assert fresh.result(0) == 0


# -- security -----------------------------------------------------------------------------------

FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_MODULES = {"pickle", "marshal", "subprocess", "ctypes", "shelve"}
# The process pools must start processes and send them pickles, so their modules, and only they,
# may import these. The pickles travel only over pipes between Blender and the processes it started
# itself (no file, no socket, nothing another program can write to), and no string is evaluated
# there either (FORBIDDEN_CALLS holds for them too). A cluster pool's broker relays them to and from
# the Dask scheduler the user named: Blender unpickles what that cluster sends back, as any Dask
# client does (docs/cluster.md says to point it only at a cluster one trusts).
# run_forever in the Blender binary puts Blender's own C SIGINT handler back with sigaction(2),
# through ctypes and the C library already loaded (nothing else is loaded, no string evaluated).
# The pool's workers end with Blender: a worker asks Linux for PR_SET_PDEATHSIG (prctl, through
# ctypes and the C library already loaded), and on Windows Blender puts them in a Job Object
# (kernel32, through ctypes: _windows).
# The test kit's launcher (testing/_launch.py and the modules it runs: _blenders, _display,
# _sessions) runs outside Blender and starts Blender, pip and Xvfb; it is not in the add-on zip
# (scripts/build.py).
ALLOWED_IMPORTS = {
    "_calls.py": {"pickle"},
    "_tasks.py": {"pickle"},
    "_wire.py": {"pickle"},
    "_interpreter.py": {"subprocess"},
    "_pipes.py": {"subprocess"},
    "_pool.py": {"pickle", "subprocess"},
    "_cluster.py": {"pickle", "subprocess"},
    "_process_child.py": {"pickle", "ctypes"},
    "_broker.py": {"pickle"},
    "_headless.py": {"ctypes"},
    "_windows.py": {"ctypes", "subprocess"},
    "_blenders.py": {"subprocess"},
    "_display.py": {"subprocess"},
    "_sessions.py": {"subprocess"},
}


def test_package_never_evaluates_strings_or_loads_code():
    for path in sorted((ROOT / "mainthread_tasks").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        forbidden = FORBIDDEN_MODULES - ALLOWED_IMPORTS.get(path.name, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {node.func.id}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    assert name.split(".")[0] not in forbidden, f"{path.name}:{node.lineno} imports {name}"


def test_only_the_process_pool_modules_may_import_pickle_or_subprocess():
    for name in ALLOWED_IMPORTS:
        assert list((ROOT / "mainthread_tasks").rglob(name)), f"ALLOWED_IMPORTS names a module that is gone: {name}"


def test_manifest_asks_for_no_permissions():
    manifest = ROOT / "blender_manifest.toml"
    if manifest.exists():
        text = manifest.read_text()
        assert "[permissions]" not in text and "\npermissions" not in text
