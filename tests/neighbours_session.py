"""Runs in a fresh interpreter of the tier (tests/test_neighbours.py): joined_threads among neighbours.

    python neighbours_session.py RESULT.json SECONDS ROOT [real]                  # CPython, bpy wheel
    blender -b --factory-startup --python neighbours_session.py -- RESULT.json SECONDS ROOT real

In one process, for SECONDS: the add-on's copy of the library and a second copy that another
add-on bundles (imported under another package name, with its own module state); plain threads
from before any block that start threads (some fail), give work to ``ThreadPoolExecutor``\\ s made
before and after the imports; another library that installs its own ``threading.excepthook`` and
takes it out again; and the main thread opening and closing blocks of both copies, empty,
with work, nested. The JSON file gets ``{"ok": true, "facts": ...}`` or ``{"ok": false, "error": ...}``.
"""

import collections
import gc
import json
import shutil
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
RESULT, SECONDS, ROOT, REAL = Path(args[0]), float(args[1]), Path(args[2]), args[3:4] == ["real"]
JOIN = 20.0  # seconds: any join longer than this is a hang


def import_two_copies():
    """The add-on's copy, and a copy another add-on bundles, under its own package name."""
    sys.path.insert(0, str(ROOT))
    import mainthread_tasks as addon

    vendor = Path(tempfile.mkdtemp(prefix="mtt-neighbour-"))
    try:
        package = vendor / "neighbour_addon" / "_vendor"
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "mainthread_tasks", package / "mainthread_tasks", ignore=ignore)
        (package.parent / "__init__.py").write_text("")
        (package / "__init__.py").write_text("")
        sys.path.insert(0, str(vendor))
        from neighbour_addon._vendor import mainthread_tasks as bundled
    finally:
        sys.path.remove(str(vendor))
        shutil.rmtree(vendor)
    assert bundled._threads is not addon._threads and bundled._submit is not addon._submit
    return addon, bundled


def session():
    lock = threading.Lock()
    reported = collections.Counter()  # failures that reached the application's excepthook

    def application_hook(hook_args):
        with lock:
            reported[str(hook_args.exc_value)] += 1

    threading.excepthook = application_hook  # the application's, before any library is imported
    before = set(threading.enumerate())
    pool_before = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pool-before")
    pool_before.submit(int).result()  # idle workers from before the imports
    if REAL:
        import bpy  # noqa: F401 - in the bpy wheel, Blender is loaded by this import
    addon, bundled = import_two_copies()
    pool_after = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pool-after")
    try:
        facts, outsiders = side_by_side(addon, bundled, pool_before, pool_after)
    finally:
        pool_before.shutdown()
        pool_after.shutdown()
    del pool_before, pool_after  # they keep their ended workers' Thread objects

    # Every failure of a thread no block owns reached the application's hook once; no block's did.
    expected = collections.Counter(outsiders)
    assert reported == expected, (sorted((reported - expected).items())[:5], sorted((expected - reported).items())[:5])
    assert threading.excepthook is application_hook

    # Nothing leaks: no thread, no queued task, no block's bookkeeping, no Thread object.
    left = [t.name for t in threading.enumerate() if t not in before]
    assert not left, left
    for lib in (addon, bundled):
        assert lib.stats().pending == 0, lib.stats()
    gc.collect()
    scopes = [o for o in gc.get_objects() if isinstance(o, (addon.ThreadScope, bundled.ThreadScope))]
    assert not scopes, f"{len(scopes)} blocks outlive their end"
    dead = [o.name for o in gc.get_objects() if isinstance(o, threading.Thread) and o.ident and not o.is_alive()]
    assert not dead, f"{len(dead)} ended threads are kept: {dead[:5]}"
    return facts


def side_by_side(addon, bundled, pool_before, pool_after):
    """SECONDS of neighbours and blocks; returns facts and the failures that no block owns."""
    pools = (pool_before, pool_after)
    stop = threading.Event()
    problems = []
    outsiders = []  # names of the failures of threads no block owns: each must reach the hook once

    def fail(name):
        raise ValueError(name)

    def neighbour(i):
        # Another add-on's thread from before any block: starts threads, some of which fail.
        n = 0
        try:
            while not stop.is_set():
                n += 1
                name = f"outsider-{i}-{n}"
                thread = threading.Thread(target=fail if n % 8 == 0 else int, args=(name,) if n % 8 == 0 else ())
                thread.start()
                thread.join(JOIN)
                assert not thread.is_alive(), "a neighbour's thread hangs"
                if n % 8 == 0:
                    outsiders.append(name)
                for pool in pools:
                    assert pool.submit(abs, -n).result(JOIN) == n
        except BaseException:  # noqa: BLE001 - reported below
            problems.append(f"neighbour {i}: {traceback.format_exc()}")

    their_calls = [0]

    def other_library():
        # Installs its own excepthook over whatever is there and puts the previous one back, as
        # pytest's catch_threading_exception and error reporters do.
        try:
            while not stop.is_set():
                previous = threading.excepthook

                def theirs(hook_args, previous=previous):
                    their_calls[0] += 1
                    previous(hook_args)

                threading.excepthook = theirs
                time.sleep(0.002)
                threading.excepthook = previous
                time.sleep(0.001)
        except BaseException:  # noqa: BLE001 - reported below
            problems.append(f"other library: {traceback.format_exc()}")

    neighbours = [threading.Thread(target=neighbour, args=(i,), name=f"neighbour-{i}") for i in range(3)]
    neighbours.append(threading.Thread(target=other_library, name="other-library"))
    for thread in neighbours:
        thread.start()

    hold = threading.Event()

    def block_with_work(lib, tag):
        """One block of ``lib`` with every kind of thread and work in it; its failures are its own."""
        done = []

        def on_main(value):
            assert lib.is_main_thread()
            return value

        def child(value):  # a thread started by the block's executor work
            time.sleep(0.001)
            done.append(lib.call_on_main(on_main, value))

        try:
            with lib.joined_threads(timeout=JOIN) as scope:
                scope.start(lambda: done.append(lib.call_on_main(on_main, "scope")))
                threading.Thread(target=lambda: done.append(lib.call_on_main(on_main, "plain"))).start()
                threading.Thread(target=fail, args=(f"{tag}-plain",), daemon=True).start()
                scope.start(fail, f"{tag}-scope")
                pool_before.submit(lambda: done.append(lib.call_on_main(on_main, "pool-before")))
                pool_after.submit(lambda: threading.Thread(target=child, args=("pool-after",)).start())
                mine = threading.Thread(target=hold.wait, args=(JOIN,))
                addon._threads.unowned(mine)  # a thread the add-on's copy keeps (its progress printer)
                mine.start()
        except ExceptionGroup as group:
            failures = sorted(str(e) for e in group.exceptions)
        else:
            failures = []
        if failures != [f"{tag}-plain", f"{tag}-scope"]:
            problems.append(f"{tag}: the block raised {failures}")
        if sorted(done) != ["plain", "pool-after", "pool-before", "scope"]:
            problems.append(f"{tag}: the block ended with {sorted(done)} done")
        if not mine.is_alive():
            problems.append(f"{tag}: the block waited for a thread the add-on's copy keeps")
        hold.set()
        mine.join(JOIN)
        hold.clear()

    blocks = 0
    started = time.monotonic()
    sys.setswitchinterval(1e-5)  # threads take turns every 10 us: the races show within SECONDS
    try:
        while time.monotonic() - started < SECONDS and not problems:
            for lib in (addon, bundled, addon, bundled):
                with lib.joined_threads(timeout=JOIN):
                    pass
                blocks += 1
            for lib, other in ((addon, bundled), (bundled, addon)):
                tag = f"{lib.__name__}-{blocks}"
                block_with_work(lib, tag)
                # Nested across the copies: each block raises only its own failures.
                try:
                    with lib.joined_threads(timeout=JOIN):
                        block_with_work(other, f"{tag}-inner")
                        threading.Thread(target=fail, args=(f"{tag}-outer",)).start()
                except ExceptionGroup as group:
                    outer = [str(e) for e in group.exceptions]
                else:
                    outer = []
                if outer != [f"{tag}-outer"]:
                    problems.append(f"{tag}: the outer block raised {outer}")
                blocks += 3
    finally:
        sys.setswitchinterval(0.005)
        stop.set()
        for thread in neighbours:
            thread.join(JOIN)
    assert not problems, "\n".join(problems[:5])
    facts = {
        "seconds": round(time.monotonic() - started, 2),
        "blocks": blocks,
        "outsider_failures": len(outsiders),
        "their_hook_calls": their_calls[0],
    }
    assert blocks > 50 and len(outsiders) > 20, facts  # the neighbours really ran beside the blocks
    return facts, outsiders


def main():
    try:
        outcome = {"ok": True, "facts": session()}
    except BaseException:  # noqa: BLE001 - the verdict says what failed
        outcome = {"ok": False, "error": traceback.format_exc()}
    RESULT.write_text(json.dumps(outcome))


main()
