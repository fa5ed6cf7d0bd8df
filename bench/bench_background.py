"""Background-mode benchmarks, inside ``blender --background``; run by ``bench/run.py`` as

    blender --background --factory-startup --python-exit-code 1 \\
        --python bench/_harness.py -- bench_background inside_blender OUT.json [--quick]

Every figure is measured next to its anchor in this same process, interleaved (repeat 1 of every
case, then repeat 2, ...) so that noise from other processes hits all of them alike; the best
repeat of each is kept. Drains run on the main thread with ``pump`` (timers never fire in
--background). What each case measures is written next to it and in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import json
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from queue import Empty, SimpleQueue

import _harness
from _harness import duration, rate, row, size

KEY = "background"
IN_SID_CHROOT = True
TIMEOUT = 900  # seconds

perf_counter = time.perf_counter

PRODUCERS = 8
PER_PRODUCER = 25_000
THROUGHPUT_REPEATS = 7
ROUND_TRIPS = 2_000
ROUND_TRIP_REPEATS = 5
PENDING_FOR_BYTES = 100_000
NO_GROWTH_TASKS = 1_000_000
NO_GROWTH_BOUND = 64 * 1024  # bytes
DRAIN_POLL = 0.05  # seconds a drain loop blocks when the queue is empty


def task(i):
    """The task every throughput case runs: a plain Python function, doing nothing."""


class Markers:
    """Each producer queues ``marker`` after its tasks; per-thread FIFO makes it its last task."""

    def __init__(self):
        self.count = 0
        self.on_last = None  # called by the last producer's marker

    def marker(self):
        self.count += 1  # main thread only
        if self.count == PRODUCERS and self.on_last is not None:
            self.on_last()


# -- throughput: 8 producer threads, the main thread drains --------------------------------------


def _throughput(produce, drain) -> float:
    """Tasks per second from the producers' start to the last task's end."""
    markers = Markers()
    barrier = threading.Barrier(PRODUCERS + 1)

    def producer():
        barrier.wait()
        produce(PER_PRODUCER, markers.marker)

    threads = [threading.Thread(target=producer, name=f"producer-{i}") for i in range(PRODUCERS)]
    for thread in threads:
        thread.start()
    gc.collect()
    barrier.wait()
    started = perf_counter()
    drain(markers)
    elapsed = perf_counter() - started
    for thread in threads:
        thread.join()
    return PRODUCERS * PER_PRODUCER / elapsed


def _batches(q: SimpleQueue, markers: Markers):
    """The batches a pump()-like drain takes off ``q`` until every producer's marker ran, as
    ``(first item, how many more to take now)``: the first is taken at once if the queue is not
    empty, else waited for up to DRAIN_POLL (``get(timeout)``, as pump does)."""
    get, get_nowait, qsize = q.get, q.get_nowait, q.qsize
    while markers.count < PRODUCERS:
        try:
            first = get_nowait() if qsize() else get(timeout=DRAIN_POLL)
        except Empty:
            continue
        yield first, qsize()


def _raw_queue():
    """The floor: put (fn, args) on a SimpleQueue; drain in batches the way _run_batch does -- a
    ``get_nowait()`` call then the task, with the per-task exception guard every design needs. No
    Future, no counters, no timing, no bookkeeping."""
    q = SimpleQueue()
    put = q.put

    def produce(n, marker):
        for i in range(n):
            put((task, (i,)))
        put((marker, ()))

    def drain(markers):
        get_nowait = q.get_nowait
        for (fn, args), more in _batches(q, markers):
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - the bare queue drops failures, as the docs recipe does
                pass
            for _ in range(more):
                fn, args = get_nowait()
                try:
                    fn(*args)
                except Exception:  # noqa: BLE001 - likewise
                    pass

    return produce, drain


def _plain_future():
    """One stock ``concurrent.futures.Future`` per task through the same raw queue and drain,
    completed the way ``concurrent.futures.thread`` completes it."""
    q = SimpleQueue()
    put = q.put
    Future = cf.Future

    def run(future, fn, args):
        if future.set_running_or_notify_cancel():
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - into the Future, as concurrent.futures does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def produce(n, marker):
        for i in range(n):
            put((Future(), task, (i,)))
        put((Future(), marker, ()))

    def drain(markers):
        get_nowait = q.get_nowait
        for first, more in _batches(q, markers):
            run(*first)
            for _ in range(more):
                run(*get_nowait())  # a Python call per task costs little next to the Future's

    return produce, drain


def _asyncio_threadsafe():
    """``loop.call_soon_threadsafe`` into an asyncio loop run by the main thread."""
    loop = asyncio.new_event_loop()

    def produce(n, marker):
        call = loop.call_soon_threadsafe
        for i in range(n):
            call(task, i)
        call(marker)

    def drain(markers):
        markers.on_last = loop.stop  # the markers only ever run inside the loop
        loop.run_forever()

    return produce, drain, loop


def _ours(submit_name):
    import mainthread_tasks as mt

    def produce(n, marker):
        submit = getattr(mt, submit_name)
        for i in range(n):
            submit(task, i)
        mt.post_on_main(marker)

    def drain(markers):
        pump = mt.pump
        while markers.count < PRODUCERS:
            pump(DRAIN_POLL)

    return produce, drain


def bench_throughput() -> dict:
    asyncio_produce, asyncio_drain, loop = _asyncio_threadsafe()
    cases = {
        "raw_simplequeue": _raw_queue(),
        "post_on_main": _ours("post_on_main"),
        "run_on_main": _ours("run_on_main"),
        "asyncio_call_soon_threadsafe": (asyncio_produce, asyncio_drain),
        "plain_future": _plain_future(),
    }
    runs: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(THROUGHPUT_REPEATS):
            for name, (produce, drain) in cases.items():
                runs[name].append(_throughput(produce, drain))
    finally:
        loop.close()
    return {name: {"best": max(rates), "runs": rates} for name, rates in runs.items()}


# -- round trip: worker -> main -> worker, one at a time -------------------------------------------


def _round_trips(one_trip, drain) -> dict:
    samples: list[float] = []
    finished = threading.Event()

    def worker():
        try:
            for i in range(ROUND_TRIPS):
                started = perf_counter()
                one_trip(i)
                samples.append(perf_counter() - started)
        finally:
            finished.set()

    thread = threading.Thread(target=worker, name="round-trip")
    thread.start()
    drain(finished)
    thread.join()
    return _harness.percentiles(samples)


def _ours_round_trip():
    import mainthread_tasks as mt

    call_on_main = mt.call_on_main

    def one_trip(i):
        call_on_main(task, i)

    def drain(finished):
        pump = mt.pump
        while not finished.is_set():
            pump(DRAIN_POLL)

    return one_trip, drain


def _raw_round_trip():
    """A stock Future put on a SimpleQueue; the main thread blocks in ``get(timeout)`` (as pump
    does when idle), runs it and sets the result; the worker waits in ``Future.result()``."""
    q = SimpleQueue()
    put = q.put
    Future = cf.Future

    def one_trip(i):
        future = Future()
        put((future, task, (i,)))
        future.result()

    def drain(finished):
        get = q.get
        while not finished.is_set():
            try:
                future, fn, args = get(timeout=DRAIN_POLL)
            except Empty:
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - into the Future, as concurrent.futures does
                    future.set_exception(exc)

    return one_trip, drain


def bench_round_trip() -> dict:
    cases = {"call_on_main": _ours_round_trip(), "raw_future_simplequeue": _raw_round_trip()}
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    for _ in range(ROUND_TRIP_REPEATS):
        for name, (one_trip, drain) in cases.items():
            gc.collect()
            runs[name].append(_round_trips(one_trip, drain))
    result = {}
    for name, repeats in runs.items():
        best = min(repeats, key=lambda r: r["p50"])
        result[name] = {"p50": best["p50"], "p99": best["p99"], "runs": repeats}
    return result


# -- memory ------------------------------------------------------------------------------------


def _bytes_per_pending(submit, drain) -> float:
    """tracemalloc bytes held per queued task, for PENDING_FOR_BYTES tasks queued at once."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        holder = submit(PENDING_FOR_BYTES)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    drain(holder)
    return (after - before) / PENDING_FOR_BYTES


def bench_memory() -> dict:
    import mainthread_tasks as mt

    def ours(submit):
        def queue_them(n):
            for _ in range(n):
                submit(task, 1)

        return queue_them, lambda _holder: mt.pump()

    def raw(make_item):
        def queue_them(n):
            q = SimpleQueue()
            for _ in range(n):
                q.put(make_item())
            return q

        return queue_them, lambda q: None

    loop = asyncio.new_event_loop()

    def asyncio_queue(n):
        for _ in range(n):
            loop.call_soon_threadsafe(task, 1)

    def asyncio_drain(_holder):
        loop.call_soon(loop.stop)
        loop.run_forever()

    def args(*values):  # a fresh args tuple per task, as every submit function gets one
        return values

    cases = {
        "post_on_main": ours(mt.post_on_main),
        "run_on_main": ours(mt.run_on_main),
        "raw_simplequeue": raw(lambda: (task, args(1))),
        "plain_future": raw(lambda: (cf.Future(), task, args(1))),
        "asyncio_call_soon_threadsafe": (asyncio_queue, asyncio_drain),
    }
    try:
        per_task = {name: _bytes_per_pending(*case) for name, case in cases.items()}
    finally:
        loop.close()
    return {"bytes_per_pending_task": per_task, "growth": _growth_after_many()}


def _growth_after_many() -> dict:
    """Traced bytes still held after NO_GROWTH_TASKS tasks went through (after a warm-up run of the
    same shape): post_on_main, run_on_main (Futures dropped) and call_on_main from 4 workers."""
    import mainthread_tasks as mt

    workers = 4

    def worker(n):
        post, run, call = mt.post_on_main, mt.run_on_main, mt.call_on_main
        for i in range(n):
            if i % 100 == 0:
                call(task, 1)
            elif i % 2:
                post(task, 1)
            else:
                run(task, 1)

    def run_all(total):
        with mt.joined_threads(timeout=600) as scope:
            for _ in range(workers):
                scope.start(worker, total // workers)
        mt.pump()

    gc.collect()
    tracemalloc.start()
    try:
        run_all(100_000)  # warm-up: queue storage, thread machinery, caches reach their size
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        started = perf_counter()
        run_all(NO_GROWTH_TASKS)
        seconds = perf_counter() - started
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {
        "tasks": NO_GROWTH_TASKS,
        "growth_bytes": after - before,
        "bound_bytes": NO_GROWTH_BOUND,
        "seconds_under_tracemalloc": seconds,
    }


def inside_blender(out: Path, quick: bool) -> None:
    """Runs in ``blender --background``: every case, then writes ``out``."""
    global PER_PRODUCER, THROUGHPUT_REPEATS, ROUND_TRIPS, ROUND_TRIP_REPEATS, NO_GROWTH_TASKS
    if quick:  # a smoke run of the whole pipeline, not for figures
        PER_PRODUCER, THROUGHPUT_REPEATS, ROUND_TRIPS, ROUND_TRIP_REPEATS = 2_000, 1, 200, 1
        NO_GROWTH_TASKS = 20_000
    import bpy

    started = perf_counter()
    results = {
        "blender": bpy.app.version_string,
        "python": sys.version.split()[0],
        "switch_interval": sys.getswitchinterval(),
        "producers": PRODUCERS,
        "tasks_per_repeat": PRODUCERS * PER_PRODUCER,
        "throughput_repeats": THROUGHPUT_REPEATS,
        "round_trips_per_repeat": ROUND_TRIPS,
        "round_trip_repeats": ROUND_TRIP_REPEATS,
    }
    results["throughput"] = bench_throughput()
    results["round_trip"] = bench_round_trip()
    results["memory"] = bench_memory()
    results["seconds"] = perf_counter() - started
    out.write_text(json.dumps(results, indent=2))


# -- the driver: outside Blender -------------------------------------------------------------------


def run(context: _harness.Context) -> dict:
    return context.background("background", inside_blender, TIMEOUT)


def rows(bg: dict) -> list[dict]:
    tp = {name: case["best"] for name, case in bg["throughput"].items()}
    rt = bg["round_trip"]
    memory = bg["memory"]["bytes_per_pending_task"]
    growth = bg["memory"]["growth"]
    n = f"{bg['producers']} producers"
    median = {name: statistics.median(case["runs"]) for name, case in bg["throughput"].items()}
    return [
        row(
            f"post_on_main throughput ({n})",
            tp["post_on_main"],
            rate,
            "raw SimpleQueue put → get_nowait+call (floor)",
            tp["raw_simplequeue"],
            0.5,
            True,
        ),
        row(
            f"post_on_main throughput, median of {bg['throughput_repeats']}",
            median["post_on_main"],
            rate,
            "raw SimpleQueue floor, median",
            median["raw_simplequeue"],
            None,
            True,
        ),
        row(
            f"run_on_main throughput ({n})",
            tp["run_on_main"],
            rate,
            "asyncio loop.call_soon_threadsafe",
            tp["asyncio_call_soon_threadsafe"],
            1.2,
            True,
        ),
        row(
            f"run_on_main throughput, median of {bg['throughput_repeats']}",
            median["run_on_main"],
            rate,
            "asyncio call_soon_threadsafe, median",
            median["asyncio_call_soon_threadsafe"],
            None,
            True,
        ),
        row(
            f"run_on_main throughput ({n})",
            tp["run_on_main"],
            rate,
            "one stock concurrent.futures.Future per task",
            tp["plain_future"],
            None,
            True,
        ),
        row(
            f"stock Future per task ({n})",
            tp["plain_future"],
            rate,
            "asyncio loop.call_soon_threadsafe",
            tp["asyncio_call_soon_threadsafe"],
            None,
            True,
        ),
        row(
            "call_on_main round trip p50 (background)",
            rt["call_on_main"]["p50"],
            duration,
            "stock Future + SimpleQueue round trip p50",
            rt["raw_future_simplequeue"]["p50"],
            1.3,
        ),
        row(
            "call_on_main round trip p99 (background)",
            rt["call_on_main"]["p99"],
            duration,
            "stock Future + SimpleQueue round trip p99",
            rt["raw_future_simplequeue"]["p99"],
        ),
        row(
            "bytes per pending post_on_main task",
            memory["post_on_main"],
            size,
            "raw SimpleQueue (fn, args) item",
            memory["raw_simplequeue"],
        ),
        row(
            "bytes per pending run_on_main task",
            memory["run_on_main"],
            size,
            "stock Future + (future, fn, args) item",
            memory["plain_future"],
        ),
        row(
            "bytes per pending run_on_main task",
            memory["run_on_main"],
            size,
            "asyncio call_soon_threadsafe Handle",
            memory["asyncio_call_soon_threadsafe"],
        ),
        row(
            f"traced memory growth after {growth['tasks']:,} tasks",
            max(growth["growth_bytes"], 0),
            size,
            "bound",
            growth["bound_bytes"],
            1.0,
        ),
    ]


def notes(_bg: dict) -> list[str]:
    return []
