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
    assert (s.submitted, s.completed, s.failed, s.cancelled, s.pending) == (THREADS * PER_THREAD, THREADS * PER_THREAD, 0, 0, 0)


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
        for i in range(1000):
            future = mt.run_on_main(task, rng.random() < 0.1)
            if rng.random() < 0.2:
                future.cancel()
            mine.append(future)
        outcome = {"ok": 0, "failed": 0, "cancelled": 0}
        for future in mine:
            if future.cancelled():
                outcome["cancelled"] += 1
            elif future.exception(timeout=60) is not None:
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
    assert (s.completed, s.failed, s.cancelled, s.pending) == (results["ok"], results["failed"], results["cancelled"], 0)
