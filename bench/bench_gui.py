"""GUI-mode benchmarks, inside Blender's real UI under Xvfb; run by ``bench/run.py`` as

    xvfb-run -a -s "-screen 0 1280x720x24" blender --factory-startup \\
        --python bench/_harness.py -- bench_gui inside_ui OUT.json [--quick]

The part only registers a timer and returns; the measurements run in Blender's event loop, one
step per timer call (a generator), so the UI keeps drawing and the add-on's own timer drains the
queue exactly as it does for users. Each figure is measured next to its anchor in this same
session: the recipe in the ``bpy.app.timers`` docs (a timer every 1.0 s draining a ``queue.Queue``,
verbatim below) and the same recipe polling every 0.3 s. What each step measures is in its
docstring and in docs/performance.md. Writes OUT.json (figures and raw samples) and quits Blender.
"""

from __future__ import annotations

import queue
import random
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import _harness
import _idle_cpu
from _harness import duration, overhead_row, percent, row

KEY = "gui"
IN_SID_CHROOT = True
TIMEOUT = 600  # seconds

perf_counter = time.perf_counter
busy_wait = _harness.busy_wait

ROUND_TRIP_WORKERS = 8
BACKLOG_TASK_SECONDS = 0.0002

#: The states idle_cpu() alternates between (see _set_idle_state).
IDLE_STATES = ("disabled", "enabled", "enabled_recent_work", "empty_timer")


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
        self.probe = None  # if set, called every pass (it must not allocate: a tuple a pass adds GC pauses)

    def __call__(self):
        action, self.action = self.action, None
        if action is not None:
            action()
            self.mark = len(self.times)
        self.times.append(perf_counter())
        if self.probe is not None:
            self.probe()
        return 0.0

    def start(self):
        import bpy

        self.times.clear()
        bpy.app.timers.register(self, first_interval=0.0)

    def stop(self) -> list[float]:
        import bpy

        if bpy.app.timers.is_registered(self):
            bpy.app.timers.unregister(self)
        return [b - a for a, b in pairwise(self.times)]


def raw(values) -> list[float]:
    """Seconds kept in the JSON for the plots (bench/_plots.py), to 0.1 µs."""
    return [round(value, 7) for value in values]


def wait_threads(threads, timeout):
    deadline = perf_counter() + timeout
    while any(t.is_alive() for t in threads):
        if perf_counter() > deadline:
            raise TimeoutError(f"threads still running after {timeout} s")
        yield 0.01


def set_enabled(enabled: bool) -> None:
    """The add-on enabled (its timer registered once) or disabled (the last unregister() ran)."""
    import mainthread_tasks as mt

    if enabled and not mt.stats().registered:
        mt.register()
    while not enabled and mt.stats().registered:
        mt.unregister()


def noop():
    pass


def docs_recipe(interval: float):
    """The recipe from the ``bpy.app.timers`` docs ("Use a Timer to react to events in another
    thread"), verbatim except for the interval it returns. Returns ``(run_in_main_thread, stop)``."""
    import bpy

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


def _empty_timer():
    return 0.0


# -- inside Blender's UI: the steps ----------------------------------------------------------------


def inside_ui(out: Path, quick: bool) -> None:
    """Runs in Blender's UI: registers the steps' timer and returns; Blender quits when they are done.
    ``quick``: a smoke run of the whole pipeline, not for figures."""
    import bpy

    import mainthread_tasks as mt
    from mainthread_tasks import _blender, _dispatch, _pacing, _stats

    idle_pass_seconds = 1.0 if quick else 5.0  # about as many passes as the backlog drain has
    cpu_cycles = 6 if quick else 75  # cycles through the IDLE_STATES: 22.5 s of windows per state
    round_trip_seconds = {
        "ours": 2.0 if quick else 5.0,
        "ours_after_quiet": 3.0 if quick else 20.0,
        "poll_0.3s": 2.0 if quick else 6.0,
        "docs_recipe_1.0s": 3.0 if quick else 14.0,
    }
    long_quiet_samples = 5 if quick else 30
    backlog_tasks = 2_000 if quick else 20_000
    results: dict = {"blender": bpy.app.version_string, "python": sys.version.split()[0]}
    passes = Passes()

    def settle():
        """The first passes after start-up take seconds (the window's first draws): measure nothing
        before 60 passes in a row came under 30 ms."""
        started = perf_counter()
        passes.start()
        while not (len(passes.times) > 60 and max(b - a for a, b in pairwise(passes.times[-60:])) < 0.03):
            if perf_counter() - started > 90:
                raise TimeoutError("the UI did not settle within 90 s")
            yield 0.05
        passes.stop()
        results["settle_seconds"] = perf_counter() - started

    def idle_pass():
        """One event-loop pass: the time between two calls of a timer returning 0.0, UI idle, add-on
        enabled (its timer runs in every pass too)."""
        passes.start()
        yield idle_pass_seconds
        gaps = passes.stop()
        results["idle_pass"] = dict(_harness.percentiles(gaps, top=5), samples=raw(gaps))

    def _set_idle_state(state: str) -> None:
        """Put Blender in an idle state. "disabled": no timer of ours; "enabled": the add-on's timer as
        it is when Blender idles, more than LONG_IDLE_AFTER s after the latest work (polling every
        LONG_IDLE_POLL s);
        "enabled_recent_work": the same, IDLE_AFTER..LONG_IDLE_AFTER s after work (polling every
        IDLE_POLL s); "empty_timer": only a timer that returns 0.0 at once (the cheapest any timer that
        runs every pass can be). The add-on stays registered throughout: with its timer removed it does
        nothing at all, as when it is disabled (it has no threads)."""
        timers = bpy.app.timers
        for timer in (_blender._drain_timer, _empty_timer):
            if timers.is_registered(timer):
                timers.unregister(timer)
        if state.startswith("enabled"):
            quiet = _blender.LONG_IDLE_AFTER if state == "enabled" else _blender.IDLE_AFTER
            _blender._pass_end = perf_counter() - quiet  # the latest work that long ago
            timers.register(_blender._drain_timer, first_interval=0.0, persistent=True)
        elif state == "empty_timer":
            timers.register(_empty_timer, first_interval=0.0)

    def idle_cpu():
        """Blender's idle CPU in the IDLE_STATES (see _set_idle_state), alternating fast (bench/_idle_cpu.py)."""
        cpu = _idle_cpu.IdleCpu(IDLE_STATES)
        yield from cpu.run(_set_idle_state, cpu_cycles)
        _set_idle_state("enabled")
        _blender._pass_end = perf_counter()  # back to its state right after work: the next steps submit some
        results["idle_cpu"] = cpu.summary("disabled")

    def _round_trips(name, submit_and_wait, phase_span, workers=ROUND_TRIP_WORKERS, quiet=0.0):
        """Round trips worker -> main -> worker, from ``workers`` threads; each sleeps ``quiet`` plus a
        random time up to ``phase_span`` (one period of the mechanism) before each trip, so trips start
        at random points of the timer's cycle."""
        samples: list[float] = []
        stop = threading.Event()

        def worker(seed):
            rng = random.Random(seed)
            while not stop.is_set():
                time.sleep(quiet + rng.uniform(0.0, phase_span))
                started = perf_counter()
                submit_and_wait()
                samples.append(perf_counter() - started)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
        for thread in threads:
            thread.start()
        yield round_trip_seconds[name]
        stop.set()
        yield from wait_threads(threads, 10)
        results.setdefault("round_trip", {})[name] = dict(_harness.percentiles(samples, top=5), samples=raw(samples))

    def _round_trips_after_long_quiet(samples=long_quiet_samples):
        """Round trips that each find the add-on's timer as Blender idling leaves it (polling every
        LONG_IDLE_POLL s). Waiting LONG_IDLE_AFTER s before each would take minutes, so the main thread
        sets the time of the latest work back by that much, then lets 0.06..0.35 s pass (the timer
        takes up that rate at its next call), then one worker makes the trip."""
        rng = random.Random(2)
        trips: list[float] = []
        for _ in range(samples):
            _blender._pass_end = perf_counter() - _blender.LONG_IDLE_AFTER
            yield 0.06 + rng.uniform(0.0, 0.3)

            def trip():
                started = perf_counter()
                mt.call_on_main(noop)
                trips.append(perf_counter() - started)

            thread = threading.Thread(target=trip, daemon=True)
            thread.start()
            yield from wait_threads([thread], 10)
        results.setdefault("round_trip", {})["ours_after_long_quiet"] = dict(
            _harness.percentiles(trips, top=5), samples=raw(trips)
        )

    def round_trips():
        """``call_on_main`` next to the docs recipe at 1.0 s and a 0.3 s polling timer; and on its own
        after quiet spells: one worker, a trip every IDLE_AFTER + 0.05..0.35 s, so that each one finds
        the add-on's timer polling every IDLE_POLL s instead of every pass; and after long ones
        (_round_trips_after_long_quiet)."""
        yield from _round_trips("ours", lambda: mt.call_on_main(noop), 0.010)
        yield from _round_trips(
            "ours_after_quiet", lambda: mt.call_on_main(noop), 0.3, workers=1, quiet=_blender.IDLE_AFTER + 0.05
        )
        yield from _round_trips_after_long_quiet()
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

    def _stall(name, submit_all, addon=True):
        """The gaps between two event-loop passes (the UI's frame time) while a backlog of
        backlog_tasks tasks of 0.2 ms, queued at once from the main thread, drains. Gaps count from the
        moment the backlog is queued (queuing it is not counted) until the pass after the last task;
        every gap is kept for the plot. Every gap is also split into what the add-on's timer saw
        (Blender's own part of the pass before it, the budget it gave itself, the time it spent running
        tasks) and the machine's pauses measured inside it: the time tasks ran past their 0.2 ms (a
        busy-wait only overruns when its thread is paused) and the time outside both Blender's part and
        the add-on's pass (between the add-on's timer and this one). ``addon``: the add-on's timer runs
        the backlog (else its figures say nothing about the gaps)."""
        ran = [0]
        overrun = [0.0]  # seconds, summed over the tasks

        def task():
            overrun[0] += busy_wait(BACKLOG_TASK_SECONDS)
            ran[0] += 1

        _stats.reset_stats()  # for the longest timer pass of the add-on during the drain
        # What the add-on's timer saw in each pass (it runs just before this recorder in a pass): floats
        # into preallocated lists, so that the probe allocates nothing the garbage collector tracks.
        seen = {"blender_part": [], "budget": [], "addon_pass": [], "task_overrun": []}

        def probe(
            part=seen["blender_part"].append,
            budget=seen["budget"].append,
            addon=seen["addon_pass"].append,
            tasks=seen["task_overrun"].append,
        ):
            part(_pacing.PACING.blender_part)
            budget(_pacing.PACING.pass_budget)
            addon(_dispatch.COUNTERS.last_tick)
            tasks(overrun[0])

        passes.probe = probe
        passes.start()
        passes.action = lambda: submit_all(task)
        started = perf_counter()
        while ran[0] < backlog_tasks:
            if perf_counter() - started > 120:
                raise TimeoutError(f"{name}: backlog not drained in 120 s")
            yield 0.05
        end = perf_counter()
        while passes.times[-1] < end:  # the gap that ends after the last task, too
            yield 0.0
        gaps = passes.stop()[passes.mark :]
        passes.probe = None
        begin = passes.times[passes.mark]
        series = {"end": raw(t - begin for t in passes.times[passes.mark + 1 :]), "gap": raw(gaps)}
        figures = dict(
            _harness.percentiles(gaps, top=5),
            drain_seconds=passes.times[-1] - begin,
            task_pauses=overrun[0],
            series=series,
        )
        if addon:
            at = passes.mark + 1  # seen[...][at + i]: the add-on's pass inside gap i
            split = []
            for i, gap in enumerate(gaps):
                part, budget, addon_pass = (seen[key][at + i] for key in ("blender_part", "budget", "addon_pass"))
                task_pauses = seen["task_overrun"][at + i] - seen["task_overrun"][at + i - 1]
                # Blender's part in the first gap is the one before the backlog: nothing to split there
                outside = max(0.0, gap - part - addon_pass) if i else 0.0
                split.append(
                    dict(
                        gap=gap,
                        blender_part=part,
                        budget=budget,
                        addon_pass=addon_pass,
                        task_pauses=task_pauses,
                        outside=outside,
                    )
                )
            for key in ("blender_part", "addon_pass", "task_pauses", "outside"):
                series[key] = raw(gap[key] for gap in split)
            worst = sorted(range(len(gaps)), key=gaps.__getitem__)[-5:][::-1]
            figures.update(
                longest_addon_pass=mt.stats().longest_tick,
                longest_task=mt.stats().longest_task,
                worst_gaps=[split[i] for i in worst],
                # the add-on's own share of a gap: its pass, less the pauses measured in its tasks
                longest_addon_share=max(gap["addon_pass"] - gap["task_pauses"] for gap in split),
            )
        results.setdefault("stall", {})[name] = figures

    def stalls():
        """The add-on's timer (tick budget per pass) next to the docs recipe, which drains all at once."""
        results["tick_budget"] = _pacing.PACING.tick_budget
        results["backlog_tasks"] = backlog_tasks
        results["backlog_task_seconds"] = BACKLOG_TASK_SECONDS

        def ours(task):
            for _ in range(backlog_tasks):
                mt.post_on_main(task)

        yield from _stall("ours", ours)
        run_in_main_thread, stop = docs_recipe(1.0)
        try:
            yield from _stall(
                "docs_recipe_1.0s", lambda task: [run_in_main_thread(task) for _ in range(backlog_tasks)], addon=False
            )
        finally:
            stop()

    def scenario():
        set_enabled(True)
        for step in (settle, idle_pass, idle_cpu, round_trips, stalls):
            started = perf_counter()
            yield from step()
            results.setdefault("step_seconds", {})[step.__name__] = perf_counter() - started

    _harness.step_in_ui(scenario(), out, results)


# -- the driver: outside Blender -------------------------------------------------------------------


def run(context: _harness.Context) -> dict:
    return context.ui("gui", inside_ui, TIMEOUT)


#: The UI stall target: the frame time while a backlog drains, at its 99th percentile, stays within
#: the add-on's tick budget plus what an idle event-loop pass takes at its 99th percentile.
STALL_TARGET = "tick budget + idle pass p99"


def longest_stall_parts(gap: dict) -> str:
    """The longest gap split into its parts (_stall in inside_ui)."""
    return (
        f"Blender's part {duration(gap['blender_part'])} + the add-on's pass {duration(gap['addon_pass'])} "
        f"(its budget {duration(gap['budget'])}; the machine paused its tasks {duration(gap['task_pauses'])}) "
        f"+ {duration(gap['outside'])} outside both"
    )


def net_p99(ours: dict) -> float:
    """The p99 frame time less what the machine paused the main thread inside each frame: the time
    its tasks (busy-waits) ran past their length, and the time outside Blender's part and the
    add-on's pass."""
    s = ours["series"]
    net = [
        gap - paused - outside for gap, paused, outside in zip(s["gap"], s["task_pauses"], s["outside"], strict=True)
    ]
    return _harness.percentiles(net)["p99"]


def rows(gui: dict) -> list[dict]:
    idle = gui["idle_pass"]
    one_pass = idle["p50"]
    rt = gui["round_trip"]
    stall = gui["stall"]
    budget = gui["tick_budget"]
    cpu = gui["idle_cpu"]
    backlog = f"UI stall, backlog {gui['backlog_tasks']:,} × 0.2 ms"
    enabled, recent, empty = cpu["enabled"], cpu["enabled_recent_work"], cpu["empty_timer"]
    empty_timer = "an empty timer returning 0.0, same windows"
    return [
        row("GUI round trip p50", rt["ours"]["p50"], duration, "one event-loop pass (idle, p50)", one_pass, 1.0),
        row("GUI round trip p99", rt["ours"]["p99"], duration, "one event-loop pass (idle, p50)", one_pass, 2.0),
        row(
            "GUI round trip after > 1 s without work, p50",
            rt["ours_after_quiet"]["p50"],
            duration,
            "one event-loop pass (idle, p50)",
            one_pass,
        ),
        row(
            f"GUI round trip after > 1 s without work, longest of {rt['ours_after_quiet']['n']}",
            rt["ours_after_quiet"]["max"],
            duration,
            "one event-loop pass (idle, p50)",
            one_pass,
        ),
        row(
            "GUI round trip after > 10 s without work, p50",
            rt["ours_after_long_quiet"]["p50"],
            duration,
            "one event-loop pass (idle, p50)",
            one_pass,
        ),
        row(
            f"GUI round trip after > 10 s without work, longest of {rt['ours_after_long_quiet']['n']}",
            rt["ours_after_long_quiet"]["max"],
            duration,
            "one event-loop pass (idle, p50)",
            one_pass,
        ),
        row(
            "GUI round trip p50",
            rt["ours"]["p50"],
            duration,
            "docs recipe (1.0 s timer) p50",
            rt["docs_recipe_1.0s"]["p50"],
        ),
        row(
            "GUI round trip p99",
            rt["ours"]["p99"],
            duration,
            "docs recipe (1.0 s timer) p99",
            rt["docs_recipe_1.0s"]["p99"],
        ),
        row("GUI round trip p50", rt["ours"]["p50"], duration, "0.3 s polling timer p50", rt["poll_0.3s"]["p50"]),
        row(f"p99 {backlog}", stall["ours"]["p99"], duration, STALL_TARGET, budget + idle["p99"], 1.0),
        row(
            f"p99 {backlog}, every frame less the machine's pauses measured in it",
            net_p99(stall["ours"]),
            duration,
            STALL_TARGET,
            budget + idle["p99"],
        ),
        row(
            f"longest {backlog}: {longest_stall_parts(stall['ours']['worst_gaps'][0])}",
            stall["ours"]["max"],
            duration,
            STALL_TARGET,
            budget + idle["p99"],
        ),
        row(f"p50 {backlog}", stall["ours"]["p50"], duration, "tick budget + idle pass p50", budget + one_pass),
        row(
            f"longest {backlog}",
            stall["ours"]["max"],
            duration,
            "docs recipe longest stall",
            stall["docs_recipe_1.0s"]["max"],
        ),
        row(
            "longest add-on timer pass in that drain, less the pauses measured in its tasks",
            stall["ours"]["longest_addon_share"],
            duration,
            "tick budget + one task",
            budget + gui["backlog_task_seconds"],
        ),
        row(
            "longest task in that drain (a 0.2 ms busy-wait: the rest is the machine pausing the thread)",
            stall["ours"]["longest_task"],
            duration,
            "the task's own time",
            gui["backlog_task_seconds"],
        ),
        row(
            "idle CPU, add-on enabled (% of a core, median)",
            cpu["enabled_percent"],
            percent,
            "add-on disabled",
            cpu["disabled_percent"],
        ),
        overhead_row(
            "idle CPU overhead (enabled − disabled), Blender idling (> 10 s after work)",
            enabled,
            empty_timer,
            empty["pp"],
            bound=0.2,
        ),
        overhead_row("idle CPU overhead, 1–10 s after work (polling every 15 ms)", recent, empty_timer, empty["pp"]),
    ]


def notes(gui: dict) -> list[str]:
    """The stall target as one line: PASS or MISS, the longest stall and its parts next to it."""
    ours, bound = gui["stall"]["ours"], gui["tick_budget"] + gui["idle_pass"]["p99"]
    verdict = "PASS" if ours["p99"] <= bound else "MISS"
    return [
        f"UI stall target (p99 ≤ {STALL_TARGET}): {verdict}: p99 {duration(ours['p99'])} against {duration(bound)} "
        f"({duration(net_p99(ours))} less the machine's pauses measured in the frames); "
        f"longest {duration(ours['max'])} = {longest_stall_parts(ours['worst_gaps'][0])}"
    ]
