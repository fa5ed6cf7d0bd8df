#!/usr/bin/env python3
"""progress() benchmarks, each figure next to its anchor in the same run:

- ``Progress.advance()`` called from 8 threads at once, calls per second, against a plain attribute
  increment made the same way (a method doing ``self.done += n``: what people write, and it loses
  updates under threads) and against the increment written inline (no call at all);
- the idle CPU of Blender's UI while a progress is shown in the status bar and does not change,
  against the same UI with no progress; and while it changes all the time (a redraw of the status
  bar at most 10 times a second: what a redraw costs is Blender's, under Xvfb's software OpenGL);
- what holding the queue during render/bake/composite jobs adds to the UI timer when no job runs:
  an idle timer call against the same call without the hold's check, and the job check a pass with
  tasks makes (``bpy.app.is_job_running`` for three job types) against the tick budget.

    python3 bench/bench_progress.py             # both parts, about 3 minutes
    python3 bench/bench_progress.py --quick     # a smoke run of the pipeline (figures not meaningful)
    python3 bench/bench_progress.py --skip-gui  # the threads only
    python3 bench/bench_progress.py --blender-5.2  # Debian sid's Blender 5.2 LTS (see bench/run.py)
    BLENDER=/opt/blender/blender python3 bench/bench_progress.py

It starts Blender on this file's parts (through bench/_harness.py, as bench/run.py does), in
``--background`` for the threads and the timer (Blender's own Python) and in its UI under
``xvfb-run`` for the idle CPU, prints the table and writes bench/results/progress.json and .md
(progress-blender-5.2.* with ``--blender-5.2``; nothing with ``--quick``). Exit status 1 if a goal
was missed.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import _harness
from _harness import duration, overhead_row, percent, rate, row

KEY = "progress"
IN_SID_CHROOT = True
THREADS = 8
ADVANCE_GOAL = 0.5  # Progress.advance() calls/s ≥ 0.5 × those of a plain attribute increment
IDLE_CPU_GOAL_PP = 0.3  # a progress shown costs ≤ +0.3 percentage points of idle CPU
TIMEOUT = 900  # seconds per Blender run

perf_counter = time.perf_counter


# -- inside Blender: 8 threads counting ---------------------------------------------------------------


class PlainCounter:
    """The anchor: a plain attribute increment (racy: it loses counts when threads interleave)."""

    done = 0

    def advance(self, n=1):
        self.done += n


def _count_from_threads(make_loop, seconds: float) -> float:
    """Calls per second of ``make_loop()`` loops (1,000 calls each) run by THREADS threads at once."""
    stop = threading.Event()
    start = threading.Barrier(THREADS + 1)
    loops = [0] * THREADS

    def worker(index):
        loop = make_loop()
        start.wait()
        count = 0
        while not stop.is_set():
            loop()
            count += 1
        loops[index] = count

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    start.wait()
    began = perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return 1000 * sum(loops) / (perf_counter() - began)


def thread_cases(progress_factory):
    """name -> a function returning one thread's loop of 1,000 calls."""
    calls = range(1000)
    plain = PlainCounter()
    progress = progress_factory()

    def inline():
        def loop(calls=calls, obj=plain):
            for _ in calls:
                obj.done += 1

        return loop

    def method(bound):
        def make():
            def loop(calls=calls, call=bound):
                for _ in calls:
                    call()

            return loop

        return make

    def advance_by(n):
        def make():
            def loop(calls=calls, call=progress.advance):
                for _ in calls:
                    call(n)

            return loop

        return make

    def update():
        def loop(calls=calls, call=progress.update):
            for i in calls:
                call(i)

        return loop

    return {
        "plain_method": method(plain.advance),
        "plain_inline": inline,
        "advance": method(progress.advance),
        "advance_n": advance_by(3),
        "update": update,
    }


def timer_costs(mt, repeats: int) -> dict:
    """Nanoseconds per call: the UI timer's idle call now and as it was before the hold existed
    (the same code without the check), and the job check of a pass with tasks (no job running)."""
    import timeit

    from mainthread_tasks import _blender, _pacing, _wake

    mt.register()  # binds bpy.app.is_job_running
    qsize, clock, idle_interval, run_pass = (
        _blender._qsize,
        _blender._clock,
        _blender._idle_interval,
        _blender._run_pass,
    )
    state = {"empty_at": 0.0}

    def timer_without_hold():  # _drain_timer before holding: queue check, clock, idle interval
        if qsize():
            run_pass()
            return 0.0
        now = state["empty_at"] = clock()
        if _wake.SOURCES.all:
            return 0.0
        return idle_interval(now)

    cases = {
        "idle_call": _blender._drain_timer,
        "idle_call_without_hold": timer_without_hold,
        "job_check": _blender._jobs_hold,
    }
    number = 200_000
    runs = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            runs[name].append(1e9 * timeit.timeit(fn, number=number) / number)
    mt.unregister()
    return {
        "median_ns": {name: statistics.median(values) for name, values in runs.items()},
        "tick_budget_ns": 1e9 * _pacing.DEFAULT_TICK_BUDGET,
    }


def threads_in_blender(out: Path, quick: bool) -> None:
    import mainthread_tasks as mt

    seconds, repeats = (0.2, 2) if quick else (1.0, 9)
    cases = thread_cases(lambda: mt.progress("bench", total=10**12))
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(repeats):
        order = list(cases)
        random.Random(repeat).shuffle(order)  # no case always runs first or last
        for name in order:
            runs[name].append(_count_from_threads(cases[name], seconds))
    for item in mt._progress.open_progresses():
        item.close()
    result = {
        "threads": THREADS,
        "seconds_each": seconds,
        "repeats": repeats,
        "python": sys.version.split()[0],
        "runs": runs,
        "median": {name: statistics.median(values) for name, values in runs.items()},
        "timer": timer_costs(mt, repeats),
    }
    import bpy

    result["blender"] = bpy.app.version_string
    out.write_text(json.dumps(result, indent=2))


# -- inside Blender's UI: idle CPU -----------------------------------------------------------------------

GUI_STATES = ("none", "shown", "changing")


def gui_in_blender(out: Path, quick: bool) -> None:
    import bpy

    import mainthread_tasks as mt
    from mainthread_tasks import _blender, _progress_ui

    cycles = 6 if quick else 60
    result: dict = {"blender": bpy.app.version_string, "cycles": cycles}
    windows: dict[str, list[list[float]]] = {state: [] for state in GUI_STATES}
    current: dict = {"progress": None, "stop": None}

    def set_state(state):
        if current["stop"] is not None:
            current["stop"].set()
            current["stop"] = None
        if state == "none" and current["progress"] is not None:
            current["progress"].close()
            current["progress"] = None
        if state != "none" and current["progress"] is None:
            current["progress"] = mt.progress("Downloading assets", total=10**9)
            current["progress"].update(123_456)
        if state == "changing":
            stop = current["stop"] = threading.Event()
            progress = current["progress"]

            def worker():
                while not stop.is_set():
                    progress.advance()
                    time.sleep(0.001)

            threading.Thread(target=worker, daemon=True).start()
        _blender._pass_end = perf_counter() - _blender.LONG_IDLE_AFTER  # Blender idling, as most of the time

    def steps():
        yield 1.0  # Blender's start-up
        mt.register()
        started = perf_counter()
        while perf_counter() - started < 5.0:  # the first draws after start-up are slow
            yield 0.1
        draws = [0]
        remember = _progress_ui.status_bar.remember

        def counting(context):
            draws[0] += 1
            remember(context)

        _progress_ui.status_bar.remember = counting
        redraws = {state: 0 for state in GUI_STATES}
        for cycle in range(cycles):
            shift = cycle % len(GUI_STATES)
            for state in GUI_STATES[shift:] + GUI_STATES[:shift]:
                set_state(state)
                yield 0.3  # the change itself (a redraw) is not measured
                draws[0] = 0
                block = []
                cpu, now = time.process_time(), perf_counter()
                for _ in range(3):
                    yield 0.1
                    cpu_before, before = cpu, now
                    cpu, now = time.process_time(), perf_counter()
                    block.append(100.0 * (cpu - cpu_before) / (now - before))
                windows[state].append(block)
                redraws[state] += draws[0]
        set_state("none")
        _progress_ui.status_bar.remember = remember
        everything = range(cycles)
        resample = random.Random(1)

        def median_of(state, picked):
            return statistics.median(v for cycle in picked for v in windows[state][cycle])

        def difference(state, picked):
            return median_of(state, picked) - median_of("none", picked)

        for state in GUI_STATES:
            figures = {"percent": median_of(state, everything), "redraws_per_second": redraws[state] / (cycles * 0.3)}
            if state != "none":
                replicas = [difference(state, resample.choices(everything, k=cycles)) for _ in range(200)]
                figures.update(pp=difference(state, everything), stderr=statistics.stdev(replicas))
            result[state] = figures

    _harness.step_in_ui(steps(), out, result)


# -- the driver (plain python3) ---------------------------------------------------------------------


def run(context: _harness.Context) -> dict:
    threads = context.background("threads", threads_in_blender, TIMEOUT)
    gui = None if "gui" in context.skip else context.ui("gui", gui_in_blender, TIMEOUT)
    return {"blender": threads["blender"], "python": threads["python"], "threads": threads, "gui": gui}


def _nanoseconds(seconds: float) -> str:
    return f"{seconds * 1e9:.0f} ns" if seconds < 1e-6 else duration(seconds)


def rows(result: dict) -> list[dict]:
    threads, gui = result["threads"], result["gui"]
    m = threads["median"]
    n = f"{threads['threads']} threads, median of {threads['repeats']}"
    racy = "plain attribute increment in a method (racy)"
    table = [
        row(f"Progress.advance() ({n})", m["advance"], rate, racy, m["plain_method"], ADVANCE_GOAL, True),
        row(
            f"Progress.advance() ({n})",
            m["advance"],
            rate,
            "plain attribute increment inline, no call (racy)",
            m["plain_inline"],
            None,
            True,
        ),
        row(f"Progress.advance(3) ({n})", m["advance_n"], rate, racy, m["plain_method"], None, True),
        row(f"Progress.update(i) ({n})", m["update"], rate, racy, m["plain_method"], None, True),
    ]
    timer = {name: ns / 1e9 for name, ns in threads["timer"]["median_ns"].items()}
    table += [
        row(
            "UI timer call, queue empty (holding compiled in)",
            timer["idle_call"],
            _nanoseconds,
            "the same call without the hold's check",
            timer["idle_call_without_hold"],
        ),
        row(
            "job check of a pass with tasks (3 × bpy.app.is_job_running, no job)",
            timer["job_check"],
            _nanoseconds,
            "tick budget of the pass",
            threads["timer"]["tick_budget_ns"] / 1e9,
        ),
    ]
    if gui:
        for state, what, goal in (
            ("shown", "a progress shown, not changing", IDLE_CPU_GOAL_PP),
            ("changing", "a progress changing all the time", None),
        ):
            figures = gui[state]
            table.append(
                overhead_row(
                    f"idle CPU of Blender's UI, {what} ({percent(figures['percent'])}, "
                    f"{figures['redraws_per_second']:.1f} redraws/s)",
                    figures,
                    "no progress",
                    gui["none"]["percent"],
                    percent,
                    goal,
                )
            )
    return table


def notes(_result: dict) -> list[str]:
    return []


if __name__ == "__main__":
    sys.exit(
        _harness.main(
            sys.argv[1:],
            __file__,
            __doc__,
            [sys.modules[__name__]],
            "progress",
            skips=("gui",),
            table=True,
            quick_writes=False,
        )
    )
