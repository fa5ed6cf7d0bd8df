"""Blender's idle CPU in states that alternate fast, inside its UI (bench_gui.py, bench_async.py).

Blender's process CPU time (``time.process_time``: every thread, user + system) while the UI idles.
Idle CPU drifts by a few tenths of a percent over seconds and comes in bursts (a few 0.1 s windows
in a hundred take 5-15 times the usual: Blender's own periodic work, the VM), so the states
alternate fast: ``cycles`` cycles, each visiting every state in an order that rotates every cycle;
a visit waits WINDOW_SECONDS, then reads the CPU time every WINDOW_SECONDS, WINDOWS_PER_VISIT
times. A state's figure is the median of its windows (bursts hit every state alike); an overhead
is the difference of two states' medians, its standard error comes from resampling whole cycles
(bootstrap), and the plain means (bursts included) are kept too.
"""

from __future__ import annotations

import random
import statistics
import time

WINDOWS_PER_VISIT = 3
WINDOW_SECONDS = 0.1
BOOTSTRAP_REPLICAS = 200


class IdleCpu:
    """The windows of each state; ``run`` fills them, ``summary`` and ``overhead`` read them."""

    def __init__(self, states: tuple[str, ...]):
        self.states = states
        self.windows: dict[str, list[list[float]]] = {state: [] for state in states}  # per cycle
        self.spent = dict.fromkeys(states, 0.0)
        self.wall = dict.fromkeys(states, 0.0)

    def run(self, set_state, cycles: int):
        """A generator for Blender's event loop: yields the seconds to wait before the next call
        (a ``bpy.app.timers`` interval). ``set_state(state)`` puts Blender in a state."""
        states = self.states
        for cycle in range(cycles):
            for state in states[cycle % len(states) :] + states[: cycle % len(states)]:
                set_state(state)
                yield WINDOW_SECONDS  # the change itself is not measured
                block = []
                cpu, now = time.process_time(), time.perf_counter()
                for _ in range(WINDOWS_PER_VISIT):
                    yield WINDOW_SECONDS
                    cpu_before, before = cpu, now
                    cpu, now = time.process_time(), time.perf_counter()
                    block.append(100.0 * (cpu - cpu_before) / (now - before))
                    self.spent[state] += cpu - cpu_before
                    self.wall[state] += now - before
                self.windows[state].append(block)

    def _median_difference(self, state: str, baseline: str, cycles) -> float:
        def pick(name):
            return [value for cycle in cycles for value in self.windows[name][cycle]]

        return statistics.median(pick(state)) - statistics.median(pick(baseline))

    def overhead(self, state: str, baseline: str) -> dict:
        """``state`` − ``baseline`` in percentage points of a core: the medians' difference ("pp"),
        its bootstrap standard error and the difference of the means."""
        everything = range(len(self.windows[state]))
        resample = random.Random(1)
        replicas = [
            self._median_difference(state, baseline, resample.choices(everything, k=len(everything)))
            for _ in range(BOOTSTRAP_REPLICAS)
        ]
        return {
            "pp": self._median_difference(state, baseline, everything),
            "pp_mean": 100.0 * (self.spent[state] / self.wall[state] - self.spent[baseline] / self.wall[baseline]),
            "stderr": statistics.stdev(replicas),
        }

    def summary(self, baseline: str) -> dict:
        """Every state's median ("<state>_percent") and its overhead over ``baseline`` ("<state>")."""
        return {
            **{
                f"{state}_percent": statistics.median(v for block in self.windows[state] for v in block)
                for state in self.states
            },
            **{state: self.overhead(state, baseline) for state in self.states if state != baseline},
            "windows": len(self.windows[baseline]) * WINDOWS_PER_VISIT,
            "window_seconds": WINDOW_SECONDS,
            "seconds_each": statistics.median(self.wall.values()),
            "cycles": len(self.windows[baseline]),
        }
