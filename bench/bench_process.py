#!/usr/bin/env python3
"""Benchmark ``run_in_process`` next to its anchors, in one run, and print the ratios.

    python3 bench/bench_process.py            # ~1 minute
    python3 bench/bench_process.py --quick    # a smoke run of the pipeline (figures not meaningful)
    BLENDER=/opt/blender/blender python3 bench/bench_process.py

Two parts (``bench/run.py`` runs them too, unless ``--skip-process``):

1. CPU-bound speed-up, inside real Blender (``blender --background``; Debian's 3.4.1 unless
   ``$BLENDER``): TASKS pure-Python tasks of about 50 ms each (calibrated on this machine) run one
   after another on the main thread (the anchor), in 2 threads (``ThreadPoolExecutor``: the GIL
   keeps them near 1.0x), and through ``run_in_process`` with ``set_process_workers(2)``. The
   three take turns in every repeat, so that load from other processes hits them alike; the table
   shows the medians and the range of the per-repeat ratios. Goal on this 2-core machine: >= 1.7x.
2. Per-task overhead: trivial tasks (``int()``) through ``run_in_process`` and through
   ``ProcessPoolExecutor`` with the ``spawn`` context, 2 workers each, pools warm, taking turns:
   the time per task when many are in flight, and the round trip of one task at a time. This part
   runs in the bpy 5.0.1 wheel's venv (Blender as a Python module, Python 3.11) with ``bpy``
   imported, not in Blender 3.4.1: there, a ``--python`` script that imports ``multiprocessing``
   makes Blender crash at exit (and ``spawn`` would re-run the script and use the wrong
   ``sys.executable``). Goal: run_in_process <= 1.0x the executor's time per task.

3. The UI while workers compute (``xvfb-run blender``, the add-on's timer reading results): the
   event-loop pass (time between two calls of a timer that runs every pass) while idle, while one
   worker computes (the default pool on 2 cores) and while two do, and the time the pool's poll
   takes per pass. For information: no goal.

Writes bench/results/process.json. Exit status 1 if a goal was missed or a part failed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path

import _harness
from _harness import duration, row

KEY = "process"
IN_SID_CHROOT = False  # it starts the host's Blender binary and the bpy 5.0.1 venv itself

TASKS = 16  # CPU-bound tasks per repeat
TASK_SECONDS = 0.05
REPEATS = 7
OVERHEAD_TASKS = 2_000  # trivial tasks in flight, per repeat
ROUND_TRIPS = 300
OVERHEAD_REPEATS = 7
TIMEOUT = 600  # seconds per part


def sum_of_squares(n: int) -> int:
    """The CPU-bound task: pure Python, no I/O (workers import it from this module)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


# -- part 1: inside Blender ------------------------------------------------------------------------


def _calibrate(perf_counter) -> int:
    """The n for which sum_of_squares(n) takes TASK_SECONDS on this thread (best of 3)."""
    n = 100_000
    for _ in range(3):
        best = float("inf")
        for _ in range(3):
            started = perf_counter()
            sum_of_squares(n)
            best = min(best, perf_counter() - started)
        n = max(1, int(n * TASK_SECONDS / best))
    return n


def inside_blender(out: Path, quick: bool) -> None:
    """Part 1; runs in ``blender --background``."""
    from concurrent.futures import ThreadPoolExecutor
    from time import perf_counter

    import bpy

    import mainthread_tasks as mt

    tasks, repeats = (4, 2) if quick else (TASKS, REPEATS)
    n = _calibrate(perf_counter)
    mt.set_process_workers(2)
    for future in [mt.run_in_process(sum_of_squares, 10) for _ in range(2)]:  # start both workers
        future.result()
    expected = sum_of_squares(n)

    def on_main():
        return [sum_of_squares(n) for _ in range(tasks)]

    def in_threads(pool):
        return list(pool.map(sum_of_squares, [n] * tasks))

    def in_processes():
        return [f.result() for f in [mt.run_in_process(sum_of_squares, n) for _ in range(tasks)]]

    runs = {"main_thread": [], "threads": [], "run_in_process": []}
    load_before = os.getloadavg()
    with ThreadPoolExecutor(2) as pool:
        in_threads(pool)  # start both threads
        cases = [("main_thread", on_main), ("threads", lambda: in_threads(pool)), ("run_in_process", in_processes)]
        for repeat in range(repeats):
            for name, run in cases[repeat % 3 :] + cases[: repeat % 3]:  # each case goes first in turn
                started = perf_counter()
                results = run()
                runs[name].append(perf_counter() - started)
                assert results == [expected] * tasks, name
    s = mt.stats()
    result = {
        "blender": bpy.app.version_string,
        "python": sys.version.split()[0],
        "interpreter": mt._interpreter.interpreter(),
        "tasks": tasks,
        "n": n,
        "task_seconds_on_main": min(runs["main_thread"]) / tasks,
        "runs": runs,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "processes": s.processes,
        "process_failed": s.process_failed,
    }
    out.write_text(json.dumps(result, indent=2))


# -- part 2: per-task overhead, in the bpy venv ----------------------------------------------------


def overhead(out: Path, quick: bool) -> None:
    """Part 2; runs in the bpy wheel's venv (``multiprocessing`` may not go into Blender 3.4.1)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from time import perf_counter

    import bpy

    import mainthread_tasks as mt

    many, trips, repeats = (200, 30, 2) if quick else (OVERHEAD_TASKS, ROUND_TRIPS, OVERHEAD_REPEATS)
    mt.set_process_workers(2)

    def ours_many():
        futures = [mt.run_in_process(int) for _ in range(many)]
        return [f.result() for f in futures]

    def ours_trip():
        return mt.run_in_process(int).result()

    runs = {"run_in_process": [], "process_pool_executor": []}
    trips_seen = {"run_in_process": [], "process_pool_executor": []}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:

        def theirs_many():
            futures = [executor.submit(int) for _ in range(many)]
            return [f.result() for f in futures]

        def theirs_trip():
            return executor.submit(int).result()

        # Warm both pools: every worker started and past its imports.
        for f in [executor.submit(time.sleep, 0.2) for _ in range(2)] + [
            mt.run_in_process(time.sleep, 0.2) for _ in range(2)
        ]:
            f.result()
        cases = [("run_in_process", ours_many, ours_trip), ("process_pool_executor", theirs_many, theirs_trip)]
        for repeat in range(repeats):
            for name, run_many, run_trip in cases[repeat % 2 :] + cases[: repeat % 2]:
                started = perf_counter()
                assert run_many() == [0] * many
                runs[name].append((perf_counter() - started) / many)
                for _ in range(trips):
                    started = perf_counter()
                    run_trip()
                    trips_seen[name].append(perf_counter() - started)
    out.write_text(
        json.dumps(
            {
                "where": f"bpy {bpy.app.version_string} module, Python {sys.version.split()[0]}",
                "tasks": many,
                "per_task": runs,
                "round_trip_p50": {name: statistics.median(values) for name, values in trips_seen.items()},
                "load_after": os.getloadavg(),
            },
            indent=2,
        )
    )


# -- part 3: the UI while workers compute -----------------------------------------------------------


def inside_ui(out: Path, quick: bool) -> None:
    """Part 3; runs in Blender's UI (under Xvfb). Steps run from a timer, one per event-loop pass."""
    from time import perf_counter

    import bpy

    import mainthread_tasks as mt

    seconds = 0.5 if quick else 2.0
    passes: list[float] = []
    polls: list[float] = []
    pool_poll = mt._pool.LocalPool.poll

    def timed_poll(self, deadline=None):
        started = perf_counter()
        try:
            return pool_poll(self, deadline)
        finally:
            polls.append(perf_counter() - started)

    mt._pool.LocalPool.poll = timed_poll
    mt.register()
    result: dict = {"blender": bpy.app.version_string, "seconds": seconds, "phases": {}}

    def steps():
        started = perf_counter()
        while perf_counter() - started < 5.0 or max(b - a for a, b in pairwise(passes[-60:])) > 0.03:
            yield  # the first passes after start-up are slow (the window's first draws)
        for workers in (1, 2):
            mt.set_process_workers(workers)
            warm = [mt.run_in_process(sum_of_squares, 10) for _ in range(workers)]
            while not all(f.done() for f in warm):
                yield
            for label, busy in ((f"idle, {workers} worker(s) alive", False), (f"{workers} worker(s) computing", True)):
                mark, polls[:] = len(passes), []
                futures = [mt.run_in_process(_harness.busy_wait, seconds) for _ in range(workers)] if busy else []
                began = perf_counter()
                while perf_counter() - began < seconds or not all(f.done() for f in futures):
                    yield
                gaps = [b - a for a, b in pairwise(passes[mark:])]
                result["phases"][label] = {
                    "passes": len(gaps),
                    "gap_median": statistics.median(gaps),
                    "gap_max": max(gaps),
                    "polls": len(polls),
                    "poll_median": statistics.median(polls) if polls else 0.0,
                    "poll_max": max(polls, default=0.0),
                }

    def heartbeat():
        passes.append(perf_counter())
        return 0.0

    bpy.app.timers.register(heartbeat, first_interval=0.0, persistent=True)
    _harness.step_in_ui(steps(), out, result)


# -- the driver ------------------------------------------------------------------------------------


def run(context: _harness.Context) -> dict:
    """The three parts; returns their results."""
    # Blender as started from a shell: its workers run Debian's python3.11 (_harness.shell_path)
    cpu = context.background("process speed-up (Blender)", inside_blender, TIMEOUT, from_shell=True)
    python = _harness.setup().bpy_python("5.0.1")
    per_task = context.python("process overhead (bpy 5.0.1)", python, overhead, TIMEOUT, from_shell=True)
    ui = context.ui("process UI (Blender under Xvfb)", inside_ui, TIMEOUT, from_shell=True)
    return {"blender": cpu["blender"], "python": cpu["python"], "cpu": cpu, "overhead": per_task, "ui": ui}


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}×"


def rows(result: dict) -> list[dict]:
    cpu, ovh = result["cpu"], result["overhead"]
    runs = cpu["runs"]
    tasks = cpu["tasks"]
    speedups = [m / p for m, p in zip(runs["main_thread"], runs["run_in_process"], strict=True)]
    thread_ratios = [m / t for m, t in zip(runs["main_thread"], runs["threads"], strict=True)]
    per_task_ratios = [
        a / b for a, b in zip(ovh["per_task"]["run_in_process"], ovh["per_task"]["process_pool_executor"], strict=True)
    ]

    def rate(value):
        return f"{value:.1f} tasks/s"

    median = {name: statistics.median(values) for name, values in runs.items()}
    label = f"{tasks} tasks of {cpu['task_seconds_on_main'] * 1e3:.0f} ms, Blender {cpu['blender']} --background"
    table = [
        row(
            f"run_in_process, 2 workers: {label} (repeats {_spread(speedups)})",
            tasks / median["run_in_process"],
            rate,
            "the same tasks on the main thread",
            tasks / median["main_thread"],
            1.7,
            True,
        ),
        row(
            f"2 threads: {label} (repeats {_spread(thread_ratios)})",
            tasks / median["threads"],
            rate,
            "the same tasks on the main thread",
            tasks / median["main_thread"],
            None,
            True,
        ),
        row(
            f"run_in_process time per task, {ovh['tasks']} in flight, 2 workers (repeats {_spread(per_task_ratios)}; "
            f"{ovh['where']})",
            statistics.median(ovh["per_task"]["run_in_process"]),
            duration,
            "ProcessPoolExecutor (spawn), 2 workers",
            statistics.median(ovh["per_task"]["process_pool_executor"]),
            1.0,
        ),
        row(
            "run_in_process round trip p50, one task at a time",
            ovh["round_trip_p50"]["run_in_process"],
            duration,
            "ProcessPoolExecutor (spawn) round trip p50",
            ovh["round_trip_p50"]["process_pool_executor"],
            None,
        ),
    ]
    ui = result["ui"]["phases"]
    for workers in (1, 2):
        idle, busy = ui[f"idle, {workers} worker(s) alive"], ui[f"{workers} worker(s) computing"]
        table += [
            row(
                f"UI pass while {workers} worker(s) compute, median (max {duration(busy['gap_max'])}), "
                f"Blender {result['ui']['blender']} under Xvfb",
                busy["gap_median"],
                duration,
                "idle UI pass, median",
                idle["gap_median"],
                None,
            ),
            row(
                f"the pool's poll per UI pass while {workers} worker(s) compute, "
                f"median (max {duration(busy['poll_max'])})",
                busy["poll_median"],
                duration,
                "UI pass while they compute, median",
                busy["gap_median"],
                None,
            ),
        ]
    return table


def notes(result: dict) -> list[str]:
    cpu = result["cpu"]
    return [
        f"interpreter of the workers: {cpu['interpreter']}; Blender's Python {cpu['python']}; "
        f"load average {cpu['load_before']} before, {result['overhead']['load_after']} after",
        *(f"  {name:<16} " + " ".join(f"{v:.3f}" for v in values) + " s" for name, values in cpu["runs"].items()),
    ]


if __name__ == "__main__":
    sys.exit(_harness.main(sys.argv[1:], __file__, __doc__, [sys.modules[__name__]], "process"))
