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
SLICE = 0.5  # seconds of busy loop per call of busy_loop()


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


def measure(seconds: float) -> dict:
    """The busy loop in one go (plain Python; Blender's UI runs it in slices, see bench_gui.py)."""
    pauses: list[float] = []
    before = run_queue_wait()
    busy_loop(seconds, pauses)
    after = run_queue_wait()
    return summary(pauses, seconds, None if before is None or after is None else after - before)
