"""Thread safety under load: many threads, many mixed submissions; nothing lost, order kept."""

from __future__ import annotations

import random
import threading

import mainthread_tasks as mt

THREADS = 16
PER_THREAD = 3000


def test_many_threads_mixed_submissions_count_order_and_thread():
    main = threading.main_thread()
    seen: list[tuple[int, int]] = []
    off_main: list[tuple[int, int]] = []
    futures: dict[int, list] = {}

    def record(tag, i):
        if threading.current_thread() is not main:
            off_main.append((tag, i))
        seen.append((tag, i))
        return i

    def producer(tag):
        rng = random.Random(tag)
        mine = futures.setdefault(tag, [])
        for i in range(PER_THREAD):
            kind = rng.random()
            if kind < 0.45:
                mt.post_on_main(record, tag, i)
            elif kind < 0.9:
                mine.append((i, mt.run_on_main(record, tag, i)))
            else:
                assert mt.call_on_main(record, tag, i) == i

    with mt.joined_threads(timeout=120) as scope:
        for tag in range(THREADS):
            scope.start(producer, tag)
    mt.pump()

    assert off_main == []
    assert len(seen) == THREADS * PER_THREAD
    for tag in range(THREADS):
        assert [i for t, i in seen if t == tag] == list(range(PER_THREAD)), f"thread {tag} out of order"
        assert all(f.result(0) == i for i, f in futures[tag])
    s = mt.stats()
    assert (s.submitted, s.completed, s.failed, s.cancelled, s.pending) == (
        THREADS * PER_THREAD,
        THREADS * PER_THREAD,
        0,
        0,
        0,
    )


def test_many_threads_with_cancels_and_failures():
    results = {"ran": 0}
    lock = threading.Lock()

    def task(fail):
        results["ran"] += 1  # main thread only: no lock needed
        if fail:
            raise ValueError

    def producer(tag):
        rng = random.Random(1000 + tag)
        mine = []
        for _ in range(1000):
            future = mt.run_on_main(task, rng.random() < 0.1)
            if rng.random() < 0.2:
                future.cancel()
            mine.append(future)
        outcome = {"ok": 0, "failed": 0, "cancelled": 0}
        for future in mine:
            if future.cancelled():
                outcome["cancelled"] += 1
            elif future.exception(timeout=20) is not None:
                outcome["failed"] += 1
            else:
                outcome["ok"] += 1
        with lock:
            for key, value in outcome.items():
                results[key] = results.get(key, 0) + value

    with mt.joined_threads(timeout=120) as scope:
        for tag in range(THREADS):
            scope.start(producer, tag)
    s = mt.stats()
    assert results["ok"] + results["failed"] + results["cancelled"] == THREADS * 1000
    assert results["ran"] == results["ok"] + results["failed"]
    assert (s.completed, s.failed, s.cancelled, s.pending) == (
        results["ok"],
        results["failed"],
        results["cancelled"],
        0,
    )


def test_waiters_racing_the_main_threads_lock_free_finish():
    # The main thread finishes futures without the lock unless somebody watches them
    # (MainThreadFuture's module docstring). Workers start watching while it finishes them:
    # result(), wait(), as_completed() and add_done_callback() must each see every future done
    # exactly once -- no lost wakeup (a hang), no double notification (as_completed's KeyError).
    # A tiny GIL switch interval makes threads switch at nearly every chance, inside the main
    # thread's finish too; tasks that sleep(0) let the watchers in while a task runs.
    import collections
    import concurrent.futures as cf
    import sys
    import time

    rounds, per_round = 40, 300
    problems = []
    callbacks = collections.Counter()
    lock = threading.Lock()

    def watcher(futures, kind, start, r):
        start.wait()
        try:
            if kind == 0:
                assert [f.result(timeout=20) for f in futures] == list(range(per_round))
            elif kind == 1:
                done, not_done = cf.wait(futures, timeout=20)
                assert len(done) == per_round and not not_done
            elif kind == 2:
                assert sorted(f.result() for f in cf.as_completed(futures, timeout=20)) == list(range(per_round))
            else:
                for f in futures:
                    f.add_done_callback(lambda f: callbacks.update([(r, f.result())]))
        except BaseException as exc:  # noqa: BLE001 - collected, asserted below
            with lock:
                problems.append(repr(exc))

    def task(i):
        if i % 3 == 0:
            time.sleep(0)
        return i

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for r in range(rounds):
            futures = [mt.run_on_main(task, i) for i in range(per_round)]
            start = threading.Barrier(5)
            with mt.joined_threads(timeout=120) as scope:
                for kind in range(4):
                    scope.start(watcher, futures, kind, start, r)
                start.wait()
                mt.pump()  # finishes them while the watchers arrive
    finally:
        sys.setswitchinterval(switch_interval)
    assert problems == []
    assert len(callbacks) == rounds * per_round and set(callbacks.values()) == {1}
