"""How long this machine stops a thread that is running: the noise under every "longest stall".

A busy loop reads the clock as fast as it can; any gap between two reads longer than THRESHOLD is
a pause: the thread was not running (another task on its CPU, the hypervisor running something
else on the virtual CPU, an interrupt). ``bench/run.py`` runs it in plain Python, and
``bench_gui.py`` inside Blender's UI, as long as the backlog drain lasts. Linux also says how long
the guest's own scheduler kept the thread waiting (``/proc/thread-self/schedstat``): pauses much
longer than that happened outside the guest, in the host.
"""

from __future__ import annotations

import time

THRESHOLD = 0.0005  # seconds; reading the clock in a loop takes well under 1 µs
SLICE = 0.5  # seconds of busy loop between two breaks (see measure_in_slices)


def run_queue_wait() -> float | None:
    """Seconds the calling thread has waited on a run queue of the (guest) kernel, or None."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def busy_loop(seconds: float, pauses: list[float]) -> None:
    """Spin for ``seconds``, appending to ``pauses`` every gap over THRESHOLD between two clock reads."""
    clock = time.perf_counter
    last = clock()
    end = last + seconds
    while last < end:
        now = clock()
        if now - last > THRESHOLD:
            pauses.append(now - last)
        last = now


def summary(pauses: list[float], seconds: float, waited: float | None) -> dict:
    ordered = sorted(pauses, reverse=True)
    return {"seconds": seconds, "longest": ordered[0] if ordered else 0.0, "top5": ordered[:5],
            "over_1ms": sum(p > 0.001 for p in ordered), "over_threshold": len(ordered),
            "paused_seconds": sum(ordered), "run_queue_wait": waited}


def measure_in_slices(seconds: float):
    """The busy loop for ``seconds``, SLICE seconds at a time: a generator that yields 0.0 between
    two slices (Blender's UI runs a pass there; those gaps are not counted) and returns the
    summary."""
    pauses: list[float] = []
    waited: float | None = 0.0
    done = 0.0
    while done < seconds:
        before = run_queue_wait()
        busy_loop(min(SLICE, seconds - done), pauses)
        after = run_queue_wait()
        waited = None if before is None or after is None or waited is None else waited + after - before
        done += SLICE
        yield 0.0
    return summary(pauses, seconds, waited)


def measure(seconds: float) -> dict:
    """The busy loop, slice after slice without a break (plain Python)."""
    slices = measure_in_slices(seconds)
    while True:
        try:
            next(slices)
        except StopIteration as finished:
            return finished.value
