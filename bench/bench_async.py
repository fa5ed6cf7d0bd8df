#!/usr/bin/env python3
"""Coroutines in Blender's UI (``run_async``, stepped by the add-on's timer) next to the queue, in one run.

    python3 bench/bench_async.py                 # ~3 minutes
    python3 bench/bench_async.py --quick         # a smoke run of the pipeline (figures not meaningful)
    python3 bench/bench_async.py --blender-5.2   # Debian sid's Blender 5.2 LTS (the chroot)

``bench/run.py`` runs it too (``--skip-async`` leaves it out). Blender's UI under Xvfb
(``xvfb-run blender --factory-startup --python bench/_harness.py -- bench_async inside_ui OUT.json``);
the steps run from a timer, one per event-loop pass, and a heartbeat timer keeps the time of every pass.

1. ``await asyncio.sleep(0)``: the event-loop passes between two steps of a coroutine (2,000 steps of
   0.2 ms, and 2,000 empty ones). Goal: at most one pass. Next to it, a task that re-posts itself
   with ``post_on_main`` (the queue's hop: one pass).
2. The longest stall (time between two event-loop passes) while 100 coroutines take 200 steps of
   0.2 ms each (a busy-wait, then ``await asyncio.sleep(0)``), next to the queue's own figure: the
   same 20,000 steps as ``post_on_main`` tasks (bench_gui.py's stall). The two take turns, ROUNDS
   times each; goal: the median of the coroutines' longest stalls within the queue's.
3. Idle CPU with the loop alive but idle, next to the add-on without a loop (the add-on's timer as
   Blender idling leaves it in both; the states alternate fast, see bench/_idle_cpu.py). Goal:
   at most +0.2 percentage points. Also with three coroutines asleep, and the add-on disabled.

Writes bench/results/async.json (async-blender-5.2.json). Exit status 1 if a goal was missed.
"""

from __future__ import annotations

import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path

import _harness
import _idle_cpu
from _harness import duration, overhead_row, row

KEY = "async"
IN_SID_CHROOT = True
TIMEOUT = 600  # seconds

STEP_SECONDS = 0.0002  # a short step: the queue bench's task
HOPS = 2_000
COROUTINES, STEPS_EACH = 100, 200
ROUNDS = 5
IDLE_STATES = ("disabled", "no_loop", "loop_idle", "loop_asleep")
CPU_CYCLES = 30  # 9 s of windows per state
SLEEPERS = 3


# -- inside Blender's UI ---------------------------------------------------------------------------


def inside_ui(out: Path, quick: bool) -> None:
    """Runs in Blender's UI: registers the timers and returns; Blender quits when the steps are done."""
    import asyncio
    import gc

    import bpy

    import mainthread_tasks as mt
    from mainthread_tasks import _async, _blender, _pacing, _wake

    perf_counter = time.perf_counter
    busy_wait = _harness.busy_wait
    hops, coroutines, steps_each = (200, 20, 50) if quick else (HOPS, COROUTINES, STEPS_EACH)
    rounds, cycles = (1, 3) if quick else (ROUNDS, CPU_CYCLES)
    times: list[float] = []
    paused = [0.0]  # seconds the stall steps ran past their end, summed
    paused_at: list[float] = []  # paused[0] at each heartbeat
    action = []  # run at the start of the next heartbeat; gaps count from right after it
    result: dict = {
        "blender": bpy.app.version_string,
        "python": sys.version.split()[0],
        "tick_budget": _pacing.PACING.tick_budget,
        "step_length": STEP_SECONDS,
        "coroutines": coroutines,
        "steps_each": steps_each,
    }

    def heartbeat():
        if action:
            action.pop()()
        times.append(perf_counter())
        paused_at.append(paused[0])
        return 0.0

    def gaps(since: int) -> list[float]:
        return [b - a for a, b in pairwise(times[since:])]

    def net_gaps(since: int) -> list[float]:
        """The gaps less the pauses measured in the steps that ran inside them."""
        return [gap - (b - a) for gap, (a, b) in zip(gaps(since), pairwise(paused_at[since:]), strict=True)]

    def settle():
        started = perf_counter()
        while len(times) < 60 or max(gaps(len(times) - 60)) > 0.03:
            if perf_counter() - started > 90:
                raise TimeoutError("the UI did not settle within 90 s")
            yield 0.05

    def idle_pass():
        mark = len(times)
        yield 3.0
        result["idle_pass"] = _harness.percentiles(gaps(mark))

    async def hop(count: int, seconds: float, marks: list[int]) -> None:
        for _ in range(count):
            marks.append(len(times))
            busy_wait(seconds)
            await asyncio.sleep(0)

    def repost(count: int, marks: list[int]) -> None:
        marks.append(len(times))
        if count > 1:
            mt.post_on_main(repost, count - 1, marks)

    def wait_for(done, what: str, timeout: float = 120.0):
        deadline = perf_counter() + timeout
        while not done():
            if perf_counter() > deadline:
                raise TimeoutError(f"{what}: not done in {timeout} s")
            yield 0.0

    def sleep0():
        """Passes between two steps of a coroutine awaiting sleep(0), next to a task re-posting itself."""
        figures = {}
        for label, seconds in (("steps_0.2ms", STEP_SECONDS), ("empty_steps", 0.0)):
            marks: list[int] = []
            future = mt.run_async(hop(hops, seconds, marks))
            yield from wait_for(future.done, f"sleep(0) {label}")
            future.result(0)
            between = [b - a for a, b in pairwise(marks)]
            figures[label] = {
                "steps": hops,
                "passes": marks[-1] - marks[0],
                "most": max(between),
                "mean": statistics.mean(between),
            }
        marks = []
        mt.post_on_main(repost, hops // 10, marks)
        yield from wait_for(lambda: len(marks) == hops // 10, "the re-posting task")
        between = [b - a for a, b in pairwise(marks)]
        figures["repost"] = {"hops": len(marks), "most": max(between), "mean": statistics.mean(between)}
        result["sleep0"] = figures

    def stall(name: str, submit):
        """Gaps between passes from right after ``submit(step)`` until the pass after the last step."""
        ran = [0]

        def step():
            paused[0] += busy_wait(STEP_SECONDS)
            ran[0] += 1

        yield 1.5  # a second after the previous round: the timer polls as after a short quiet spell
        mark = [None]
        collections: list[float] = []  # the garbage collector's runs during the drain, in seconds
        gc_started = [0.0]

        def on_gc(phase, _info):
            if phase == "start":
                gc_started[0] = perf_counter()
            elif mark[0] is not None:
                collections.append(perf_counter() - gc_started[0])

        action.append(lambda: (submit(step), mark.__setitem__(0, len(times))))
        gc.callbacks.append(on_gc)
        try:
            yield from wait_for(lambda: ran[0] >= coroutines * steps_each, name)
            end = perf_counter()
            yield from wait_for(lambda: times[-1] > end, "the pass after the last step")
        finally:
            gc.callbacks.remove(on_gc)
        figures = _harness.percentiles(gaps(mark[0]))
        figures["net"] = _harness.percentiles(net_gaps(mark[0]))
        figures["gc"] = {
            "runs": len(collections),
            "longest": max(collections, default=0.0),
            "seconds": sum(collections),
        }
        figures["drain_seconds"] = times[-1] - times[mark[0]]
        result.setdefault("stall", {}).setdefault(name, []).append(figures)

    def stalls():
        def queue(step):
            for _ in range(coroutines * steps_each):
                mt.post_on_main(step)

        async def stepping(step):
            for _ in range(steps_each):
                step()
                await asyncio.sleep(0)

        def loop(step):
            for _ in range(coroutines):
                mt.run_async(stepping(step))

        for _ in range(rounds):
            yield from stall("queue", queue)
            yield from stall("coroutines", loop)

    sleepers: list = []

    def set_idle_state(state: str) -> None:
        """Put Blender in an idle state. "disabled": no timer of ours; "no_loop": the add-on's timer
        without the loop; "loop_idle": with the loop alive and nothing scheduled; "loop_asleep": with
        SLEEPERS coroutines asleep.
        The timer as Blender idling leaves it (LONG_IDLE_AFTER s after the latest work)."""
        loop_source = _async._source
        if sleepers:
            _wake.add_source(loop_source)
            for future in sleepers:
                future.cancel()
            while loop_source.tasks:
                mt.pump(0.01)
            sleepers.clear()
        timers = bpy.app.timers
        if timers.is_registered(_blender._drain_timer):
            timers.unregister(_blender._drain_timer)
        if state in ("disabled", "no_loop"):
            _wake.remove_source(loop_source)
        else:
            _wake.add_source(loop_source)
        if state == "loop_asleep":
            sleepers.extend(mt.run_async(asyncio.sleep(3600)) for _ in range(SLEEPERS))
            mt.pump()  # their first step: they fall asleep
            assert len(loop_source.tasks) == SLEEPERS and not loop_source.loop._ready, "the coroutines did not sleep"
        if state != "disabled":
            _blender._pass_end = perf_counter() - _blender.LONG_IDLE_AFTER
            timers.register(_blender._drain_timer, first_interval=0.0, persistent=True)

    def idle_cpu():
        mt.main_loop()  # alive
        cpu = _idle_cpu.IdleCpu(IDLE_STATES)
        yield from cpu.run(set_idle_state, cycles)
        set_idle_state("loop_idle")
        result["idle_cpu"] = {
            **cpu.summary("disabled"),
            "loop_idle_vs_no_loop": cpu.overhead("loop_idle", "no_loop"),
            "loop_asleep_vs_no_loop": cpu.overhead("loop_asleep", "no_loop"),
        }

    def steps():
        mt.register()
        for step in (settle, idle_pass, sleep0, stalls, idle_cpu):
            started = perf_counter()
            yield from step()
            result.setdefault("step_seconds", {})[step.__name__] = perf_counter() - started

    bpy.app.timers.register(heartbeat, first_interval=0.0, persistent=True)
    _harness.step_in_ui(steps(), out, result)


# -- the driver ------------------------------------------------------------------------------------


def run(context: _harness.Context) -> dict:
    """The UI part in Blender under Xvfb; returns its results."""
    return context.ui("coroutines in the UI", inside_ui, TIMEOUT, from_shell=True)


def _passes(value: float) -> str:
    return f"{value:.2f} passes" if value != int(value) else f"{int(value)} pass{'es' if value != 1 else ''}"


def rows(result: dict) -> list[dict]:
    where = f"Blender {result['blender']} under Xvfb"
    hop, empty, repost = (result["sleep0"][key] for key in ("steps_0.2ms", "empty_steps", "repost"))
    one_pass = result["idle_pass"]["p50"]
    stall = result["stall"]
    longest = {name: [r["max"] for r in runs] for name, runs in stall.items()}
    n = len(longest["queue"])
    cpu = result["idle_cpu"]
    no_loop = "the add-on's timer without a loop, same windows (vs disabled)"
    return [
        row(
            f"await asyncio.sleep(0): most event-loop passes between two steps of a coroutine "
            f"({hop['steps']:,} steps of 0.2 ms; {where})",
            hop["most"],
            _passes,
            "one event-loop pass",
            1,
            1.0,
        ),
        row(
            f"await asyncio.sleep(0), empty steps: most passes between two ({empty['steps']:,} steps)",
            empty["most"],
            _passes,
            "one event-loop pass",
            1,
            1.0,
        ),
        row(
            "await asyncio.sleep(0), steps of 0.2 ms: mean passes per step",
            hop["mean"],
            _passes,
            "a task re-posting itself with post_on_main: mean passes per hop",
            repost["mean"],
        ),
        row(
            f"longest UI stall, {result['coroutines']} coroutines × {result['steps_each']} steps of 0.2 ms "
            f"(median of {n} rounds' longest)",
            statistics.median(longest["coroutines"]),
            duration,
            f"the queue: {result['coroutines'] * result['steps_each']:,} post_on_main tasks of 0.2 ms, same",
            statistics.median(longest["queue"]),
            1.0,
        ),
        row(
            "longest UI stall, coroutines, every gap less the pauses measured in its steps (median of rounds)",
            statistics.median(r["net"]["max"] for r in stall["coroutines"]),
            duration,
            "the queue, the same way",
            statistics.median(r["net"]["max"] for r in stall["queue"]),
            1.0,
        ),
        row(
            f"longest UI stall, coroutines, over all {n} rounds",
            max(longest["coroutines"]),
            duration,
            "the queue, over all rounds",
            max(longest["queue"]),
        ),
        row(
            "p99 UI stall, coroutines (median of rounds)",
            statistics.median(r["p99"] for r in stall["coroutines"]),
            duration,
            "the queue, p99 (median of rounds)",
            statistics.median(r["p99"] for r in stall["queue"]),
        ),
        row(
            "longest UI stall, coroutines (median of rounds)",
            statistics.median(longest["coroutines"]),
            duration,
            "tick budget + one pass (idle p50)",
            result["tick_budget"] + one_pass,
        ),
        overhead_row(
            "idle CPU overhead, asyncio loop alive but idle (Blender idling, > 10 s after work)",
            cpu["loop_idle_vs_no_loop"],
            no_loop,
            cpu["no_loop"]["pp"],
            bound=0.2,
        ),
        overhead_row(
            f"idle CPU overhead, {SLEEPERS} coroutines asleep",
            cpu["loop_asleep_vs_no_loop"],
            no_loop,
            cpu["no_loop"]["pp"],
        ),
    ]


def notes(_result: dict) -> list[str]:
    return []


if __name__ == "__main__":
    sys.exit(_harness.main(sys.argv[1:], __file__, __doc__, [sys.modules[__name__]], "async"))
