#!/usr/bin/env python3
"""Benchmark ``ProcessPool(cluster=...)`` next to its anchors, in one run, and print the ratios.

    python3 bench/bench_cluster.py            # ~2 minutes
    python3 bench/bench_cluster.py --quick    # a smoke run of the pipeline (figures not meaningful)

A real Dask cluster is started here (``tests/dask_cluster.py``: a LocalCluster with a scheduler and 2
worker processes of 1 thread on 127.0.0.1, run by the Dask venv of scripts/_setup.py), then:

1. Per-task overhead: trivial tasks through ``ProcessPool(cluster=...)`` from Blender 3.4.1
   ``--background`` (results read by the main thread from the broker's pipe) and through a plain
   ``distributed.Client`` in a plain Python (the Dask venv's), to the same cluster: the time per
   task with many in flight, and the round trip of one task at a time. Goal: <= 1.3x the plain
   client's time per task.
2. Throughput: 1,000 tasks of 10 ms (a busy loop) on the cluster's 2 workers, next to the same
   tasks on a local ``ProcessPool(workers=2)``, both from the same Blender run. For information:
   the cluster's scheduler, broker and workers share this machine's 2 cores with Blender.

Writes bench/results/cluster.json. Exit status 1 if a goal was missed or a part failed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import _harness
from _harness import duration, row

KEY = "cluster"
IN_SID_CHROOT = False  # it starts the host's Blender and the host's Dask venv

MANY = 1_000  # trivial tasks in flight, per repeat
TRIPS = 100
REPEATS = 5
THROUGHPUT_TASKS = 1_000
TASK_SECONDS = 0.01
TIMEOUT = 900  # seconds per part


def nothing() -> int:
    """The trivial task (the cluster's workers import it from this module)."""
    return 0


def spin(seconds: float) -> int:
    """Hold a worker's CPU for ``seconds``; return its pid."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return os.getpid()


def _sizes(quick: bool) -> tuple[int, int, int, int]:
    return (100, 20, 2, 100) if quick else (MANY, TRIPS, REPEATS, THROUGHPUT_TASKS)


# -- part 1a: a plain distributed.Client, in the Dask venv's Python ---------------------------------


def plain_client(out: Path, quick: bool) -> None:
    from time import perf_counter

    from distributed import Client, as_completed

    many, trips, repeats, _ = _sizes(quick)
    per_task, streamed, trip_times = [], [], []
    with Client(os.environ["MTT_DASK_ADDRESS"]) as client:
        client.gather([client.submit(nothing, pure=False) for _ in range(20)])  # warm
        for _ in range(repeats):
            started = perf_counter()
            assert client.gather([client.submit(nothing, pure=False) for _ in range(many)]) == [0] * many
            per_task.append((perf_counter() - started) / many)
            # Each result taken as it finishes, as ProcessPool delivers them (not all at the end).
            started = perf_counter()
            futures = [client.submit(nothing, pure=False) for _ in range(many)]
            assert [result for _, result in as_completed(futures, with_results=True)] == [0] * many
            streamed.append((perf_counter() - started) / many)
            for _ in range(trips):
                started = perf_counter()
                client.submit(nothing, pure=False).result()
                trip_times.append(perf_counter() - started)
    out.write_text(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "per_task": per_task,
                "per_task_streamed": streamed,
                "round_trip_p50": statistics.median(trip_times),
            }
        )
    )


# -- part 1b and 2: inside Blender -------------------------------------------------------------------


def inside_blender(out: Path, quick: bool) -> None:
    from time import perf_counter

    import bpy

    import mainthread_tasks as mt

    many, trips, repeats, tasks = _sizes(quick)
    pool = mt.ProcessPool(cluster=os.environ["MTT_DASK_ADDRESS"], python=os.environ["MTT_DASK_PYTHON"])
    [f.result() for f in [pool.submit(nothing) for _ in range(20)]]  # warm: broker up, function cached
    per_task, trip_times = [], []
    for _ in range(repeats):
        started = perf_counter()
        assert [f.result() for f in [pool.submit(nothing) for _ in range(many)]] == [0] * many
        per_task.append((perf_counter() - started) / many)
        for _ in range(trips):
            started = perf_counter()
            pool.submit(nothing).result()
            trip_times.append(perf_counter() - started)
    throughput = {}
    local = mt.ProcessPool(workers=2)
    [f.result() for f in [local.submit(spin, 0.2) for _ in range(2)]]  # both workers started
    for name, executor in (("cluster", pool), ("local", local)):
        started = perf_counter()
        pids = {f.result() for f in [executor.submit(spin, TASK_SECONDS) for _ in range(tasks)]}
        throughput[name] = {"seconds": perf_counter() - started, "processes": len(pids)}
    local.shutdown()
    pool.shutdown()
    out.write_text(
        json.dumps(
            {
                "blender": bpy.app.version_string,
                "python": sys.version.split()[0],
                "per_task": per_task,
                "round_trip_p50": statistics.median(trip_times),
                "tasks": tasks,
                "throughput": throughput,
                "threads": [t.name for t in __import__("threading").enumerate()],
            }
        )
    )


# -- the driver ------------------------------------------------------------------------------------


def run(context: _harness.Context) -> dict:
    """Start the cluster, run both parts against it, stop it; returns their results."""
    import subprocess

    setup = _harness.setup()
    python = str(setup.dask_python())
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(_harness.ROOT), str(_harness.BENCH)]),
        DASK_LOGGING__DISTRIBUTED="error",
    )
    cluster = subprocess.Popen(
        [python, str(_harness.ROOT / "tests" / "dask_cluster.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        info = json.loads(cluster.stdout.readline())
        os.environ.update(MTT_DASK_ADDRESS=info["address"], MTT_DASK_PYTHON=python)
        plain = context.python("cluster: plain distributed.Client", python, plain_client, TIMEOUT)
        ours = context.background(
            "cluster: ProcessPool(cluster=...) in Blender", inside_blender, TIMEOUT, from_shell=True
        )
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, 9)
            cluster.wait(20)
    return {"blender": ours["blender"], "python": ours["python"], "ours": ours, "plain": plain}


def rows(result: dict) -> list[dict]:
    ours, plain = result["ours"], result["plain"]
    through = ours["throughput"]
    tasks = ours["tasks"]
    return [
        row(
            f"ProcessPool(cluster=...) time per task, {_sizes(False)[0]:,} in flight, 2 Dask workers "
            f"(Blender {ours['blender']} --background)",
            statistics.median(ours["per_task"]),
            duration,
            f"plain distributed.Client, plain Python {plain['python']}",
            statistics.median(plain["per_task"]),
            1.3,
        ),
        row(
            "the same, against a plain client taking each result as it finishes (as_completed)",
            statistics.median(ours["per_task"]),
            duration,
            "plain distributed.Client with as_completed(with_results=True)",
            statistics.median(plain["per_task_streamed"]),
            None,
        ),
        row(
            "ProcessPool(cluster=...) round trip p50, one task at a time",
            ours["round_trip_p50"],
            duration,
            "plain distributed.Client round trip p50",
            plain["round_trip_p50"],
            None,
        ),
        row(
            f"ProcessPool(cluster=...): {tasks:,} tasks of {TASK_SECONDS * 1e3:.0f} ms on 2 Dask workers",
            tasks / through["cluster"]["seconds"],
            lambda v: f"{v:.0f} tasks/s",
            "local ProcessPool(workers=2), the same tasks",
            tasks / through["local"]["seconds"],
            None,
            True,
        ),
    ]


def notes(result: dict) -> list[str]:
    ours = result["ours"]
    return [
        f"threads in Blender during the cluster run: {ours['threads']}",
        "  per task, ours:  " + " ".join(f"{v * 1e3:.3f}" for v in ours["per_task"]) + " ms",
        "  per task, plain: " + " ".join(f"{v * 1e3:.3f}" for v in result["plain"]["per_task"]) + " ms",
        "  per task, plain with as_completed: "
        + " ".join(f"{v * 1e3:.3f}" for v in result["plain"]["per_task_streamed"])
        + " ms",
    ]


if __name__ == "__main__":
    sys.exit(_harness.main(sys.argv[1:], __file__, __doc__, [sys.modules[__name__]], "cluster"))
