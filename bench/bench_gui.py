"""GUI-mode benchmarks, inside Blender's real UI under Xvfb; started by ``bench/run.py``:

    xvfb-run -a -s "-screen 0 1280x720x24" blender --factory-startup --python bench/bench_gui.py -- OUT.json [--quick]

The script only registers a timer and returns; the measurements run in Blender's event loop, one
step per timer call (a generator), so the UI keeps drawing and the add-on's own timer drains the
queue exactly as it does for users. Each figure is measured next to its anchor in this same
session: the recipe in the ``bpy.app.timers`` docs (a timer every 1.0 s draining a ``queue.Queue``,
verbatim below) and the same recipe polling every 0.3 s. What each step measures is in its
docstring and in bench/RESULTS.md. Writes OUT.json and quits Blender.
"""

from __future__ import annotations

import json
import queue
import random
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mainthread_tasks as mt  # noqa: E402
from mainthread_tasks import _blender, _scheduler  # noqa: E402

perf_counter = time.perf_counter
ARGS = sys.argv[sys.argv.index("--") + 1:]
OUT = Path(ARGS[0])
QUICK = "--quick" in ARGS  # a smoke run of the whole pipeline, not for figures

IDLE_PASS_SECONDS = 1.0 if QUICK else 5.0  # about as many passes as the backlog drain has
CPU_WINDOW_SECONDS = 1.0  # rounds of three states, one window each: 15 s per state in all
CPU_WINDOW_ROUNDS = 3 if QUICK else 15
ROUND_TRIP_WORKERS = 8
ROUND_TRIP_SECONDS = {"ours": 2.0 if QUICK else 5.0, "poll_0.3s": 2.0 if QUICK else 6.0,
                      "docs_recipe_1.0s": 3.0 if QUICK else 14.0}
BACKLOG_TASKS = 2_000 if QUICK else 20_000
BACKLOG_TASK_SECONDS = 0.0002

results: dict = {"blender": bpy.app.version_string, "python": sys.version.split()[0]}


# -- helpers ---------------------------------------------------------------------------------------


class Passes:
    """A timer run every event-loop pass that keeps the time of each: the UI's heartbeat.

    ``action``, if set, runs once at the start of the next call; ``mark`` is then the index of
    the time taken right after it: gaps from there on include everything the action caused.
    """

    def __init__(self):
        self.times: list[float] = []
        self.action = None
        self.mark = 0

    def __call__(self):
        action, self.action = self.action, None
        if action is not None:
            action()
            self.mark = len(self.times)
        self.times.append(perf_counter())
        return 0.0

    def start(self):
        self.times.clear()
        bpy.app.timers.register(self, first_interval=0.0)

    def stop(self) -> list[float]:
        if bpy.app.timers.is_registered(self):
            bpy.app.timers.unregister(self)
        return [b - a for a, b in zip(self.times, self.times[1:])]


passes = Passes()


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.50), "p99": pick(0.99), "max": ordered[-1], "n": len(ordered),
            "top5": ordered[:-6:-1]}


def wait_threads(threads, timeout):
    deadline = perf_counter() + timeout
    while any(t.is_alive() for t in threads):
        if perf_counter() > deadline:
            raise TimeoutError(f"threads still running after {timeout} s")
        yield 0.01


def set_enabled(enabled: bool) -> None:
    """The add-on enabled (its timer registered once) or disabled (the last unregister() ran)."""
    if enabled and not mt.stats().registered:
        mt.register()
    while not enabled and mt.stats().registered:
        mt.unregister()


def noop():
    pass


def busy_task(seconds=BACKLOG_TASK_SECONDS):
    """Holds the main thread (and the GIL) like a short bpy call would."""
    end = perf_counter() + seconds
    while perf_counter() < end:
        pass


def docs_recipe(interval: float):
    """The recipe from the ``bpy.app.timers`` docs ("Use a Timer to react to events in another
    thread"), verbatim except for the interval it returns. Returns ``(run_in_main_thread, stop)``."""
    execution_queue = queue.Queue()

    def run_in_main_thread(function):
        execution_queue.put(function)

    def execute_queued_functions():
        while not execution_queue.empty():
            function = execution_queue.get()
            function()
        return interval

    bpy.app.timers.register(execute_queued_functions)

    def stop():
        if bpy.app.timers.is_registered(execute_queued_functions):
            bpy.app.timers.unregister(execute_queued_functions)

    return run_in_main_thread, stop


# -- steps -----------------------------------------------------------------------------------------


def settle():
    """The first passes after start-up take seconds (the window's first draws): measure nothing
    before 60 passes in a row came under 30 ms."""
    started = perf_counter()
    passes.start()
    while not (len(passes.times) > 60 and max(b - a for a, b in zip(passes.times[-60:], passes.times[-59:])) < 0.03):
        if perf_counter() - started > 90:
            raise TimeoutError("the UI did not settle within 90 s")
        yield 0.05
    passes.stop()
    results["settle_seconds"] = perf_counter() - started


def idle_pass():
    """One event-loop pass: the time between two calls of a timer returning 0.0, UI idle, add-on
    enabled (its timer runs in every pass too)."""
    passes.start()
    yield IDLE_PASS_SECONDS
    results["idle_pass"] = percentiles(passes.stop())


def _empty_timer():
    return 0.0


def _set_idle_state(state: str) -> None:
    """"disabled": nothing of ours; "empty timer": only a timer that returns 0.0 at once (the
    cheapest any every-pass timer can be); "enabled": the add-on."""
    set_enabled(state == "enabled")
    registered = bpy.app.timers.is_registered(_empty_timer)
    if state == "empty timer" and not registered:
        bpy.app.timers.register(_empty_timer, first_interval=0.0)
    elif state != "empty timer" and registered:
        bpy.app.timers.unregister(_empty_timer)


def idle_cpu():
    """Blender's process CPU time (``time.process_time``: every thread, user + system) while the UI
    idles: add-on disabled, enabled, and instead of it an empty timer returning 0.0. CPU_WINDOW_ROUNDS
    rounds of one 1 s window each, the order rotating every round so that drift cancels. Nothing
    else of ours runs meanwhile: this driver wakes twice per window. The overhead of a state is the
    median over the rounds of its difference to "disabled" in the same round (other processes'
    bursts land in single windows); means over all windows are kept too."""
    states = ("disabled", "enabled", "empty timer")
    spent = dict.fromkeys(states, 0.0)
    wall = dict.fromkeys(states, 0.0)
    differences: dict[str, list[float]] = {"enabled": [], "empty timer": []}
    for round_ in range(CPU_WINDOW_ROUNDS):
        percent = {}
        for state in states[round_ % 3:] + states[:round_ % 3]:
            _set_idle_state(state)
            yield 0.2  # let the timer change take effect
            cpu0, wall0 = time.process_time(), perf_counter()
            yield CPU_WINDOW_SECONDS
            cpu, elapsed = time.process_time() - cpu0, perf_counter() - wall0
            spent[state] += cpu
            wall[state] += elapsed
            percent[state] = 100.0 * cpu / elapsed
        for state, diffs in differences.items():
            diffs.append(percent[state] - percent["disabled"])
    _set_idle_state("enabled")
    mean = {state: 100.0 * spent[state] / wall[state] for state in states}
    enabled = differences["enabled"]
    quartiles = statistics.quantiles(enabled, n=4)
    results["idle_cpu"] = {
        "disabled_percent": mean["disabled"], "enabled_percent": mean["enabled"],
        "overhead_pp": statistics.median(enabled), "overhead_pp_mean": mean["enabled"] - mean["disabled"],
        "overhead_pp_quartiles": [quartiles[0], quartiles[2]],
        "overhead_pp_stderr": statistics.stdev(enabled) / len(enabled) ** 0.5,
        "empty_timer_pp": statistics.median(differences["empty timer"]),
        "differences_pp": differences, "seconds_each": wall["enabled"]}


def _round_trips(name, submit_and_wait, phase_span):
    """Round trips worker -> main -> worker, from ROUND_TRIP_WORKERS threads; each sleeps a random
    time up to ``phase_span`` (one period of the mechanism) before each trip, so trips start at
    random points of the timer's cycle."""
    samples: list[float] = []
    stop = threading.Event()

    def worker(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            time.sleep(rng.uniform(0.0, phase_span))
            started = perf_counter()
            submit_and_wait()
            samples.append(perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(ROUND_TRIP_WORKERS)]
    for thread in threads:
        thread.start()
    yield ROUND_TRIP_SECONDS[name]
    stop.set()
    yield from wait_threads(threads, 10)
    results.setdefault("round_trip", {})[name] = percentiles(samples)


def round_trips():
    """``call_on_main`` next to the docs recipe at 1.0 s and a 0.3 s polling timer."""
    yield from _round_trips("ours", lambda: mt.call_on_main(noop), 0.010)
    for name, interval in (("poll_0.3s", 0.3), ("docs_recipe_1.0s", 1.0)):
        run_in_main_thread, stop = docs_recipe(interval)

        def submit_and_wait(run_in_main_thread=run_in_main_thread):
            done = threading.Event()
            run_in_main_thread(done.set)
            done.wait()

        try:
            yield from _round_trips(name, submit_and_wait, interval)
        finally:
            stop()


def _stall(name, submit_all):
    """Longest gap between two event-loop passes while a backlog of BACKLOG_TASKS tasks of 0.2 ms,
    queued at once from the main thread, drains. Gaps count from the moment the backlog is queued
    (queuing it is not counted) until the pass after the last task."""
    ran = [0]

    def task():
        busy_task()
        ran[0] += 1

    _scheduler.reset_stats()  # for the longest timer pass of the add-on during the drain
    passes.start()
    passes.action = lambda: submit_all(task)
    started = perf_counter()
    while ran[0] < BACKLOG_TASKS:
        if perf_counter() - started > 120:
            raise TimeoutError(f"{name}: backlog not drained in 120 s")
        yield 0.05
    end = perf_counter()
    while passes.times[-1] < end:  # the gap that ends after the last task, too
        yield 0.0
    gaps = passes.stop()[passes.mark:]
    results.setdefault("stall", {})[name] = dict(percentiles(gaps), drain_seconds=passes.times[-1] - passes.times[passes.mark],
                                                 longest_addon_pass=mt.stats().longest_tick)


def stalls():
    """The add-on's timer (tick budget per pass) next to the docs recipe, which drains all at once."""
    results["tick_budget"] = _blender.tick_budget
    results["backlog_tasks"] = BACKLOG_TASKS

    def ours(task):
        for _ in range(BACKLOG_TASKS):
            mt.post_on_main(task)

    yield from _stall("ours", ours)
    run_in_main_thread, stop = docs_recipe(1.0)
    try:
        yield from _stall("docs_recipe_1.0s", lambda task: [run_in_main_thread(task) for _ in range(BACKLOG_TASKS)])
    finally:
        stop()


STEPS = (settle, idle_pass, idle_cpu, round_trips, stalls)


def scenario():
    set_enabled(True)
    for step in STEPS:
        started = perf_counter()
        yield from step()
        results.setdefault("step_seconds", {})[step.__name__] = perf_counter() - started


def finish(error=None):
    results["ok"] = error is None
    if error:
        results["error"] = error
    OUT.write_text(json.dumps(results, indent=2))
    print("BENCH GUI", "OK" if error is None else "FAILED", flush=True)
    bpy.context.preferences.view.use_save_prompt = False  # else quitting asks to save changes
    bpy.ops.wm.quit_blender()


_steps = scenario()


def drive():
    try:
        return next(_steps)
    except StopIteration:
        finish()
    except BaseException:  # noqa: BLE001 - reported through the JSON file, then quit
        finish(traceback.format_exc())
    return None


bpy.app.timers.register(drive, first_interval=0.0)
