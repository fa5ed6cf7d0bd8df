#!/usr/bin/env python3
"""Benchmark mainthread_tasks inside real Blender next to its anchors, and print one table.

    python3 bench/run.py                  # both modes, ~2-3 minutes
    python3 bench/run.py --quick          # a smoke run of the pipeline (figures not meaningful)
    python3 bench/run.py --skip-gui       # background mode only (no Xvfb needed)
    python3 bench/run.py --skip-background  # GUI mode only
    python3 bench/run.py --skip-process   # without run_in_process's figures (bench/bench_process.py)
    python3 bench/run.py --skip-async     # without the coroutines' figures (bench/bench_async.py)
    python3 bench/run.py --skip-cluster   # without ProcessPool(cluster=...)'s figures (bench/bench_cluster.py)
    python3 bench/run.py --report         # the table and plots again from bench/results/latest.json
    BLENDER=/opt/blender/blender python3 bench/run.py
    python3 bench/run.py --blender-5.2    # Debian sid's Blender 5.2 LTS (the chroot scripts/_setup.py builds)

Background mode (``blender --background``, the main thread drains with ``pump``): throughput of
``post_on_main``, ``run_on_main`` and their anchors, the blocking round trip, memory. GUI mode
(``xvfb-run ... blender``, Blender's real event loop): round-trip latency, the longest stall while a
backlog drains, idle CPU. Processes (``bench/bench_process.py``): run_in_process's speed-up on
CPU-bound tasks and its per-task overhead next to ProcessPoolExecutor's. Coroutines
(``bench/bench_async.py``): in the UI, the passes an ``await asyncio.sleep(0)`` costs, the longest
stall while 100 coroutines step next to the queue's, idle CPU with the loop alive. Every anchor is measured in
the same run as the figure it is compared with; the table shows the ratio, the target and PASS/MISS.
Writes bench/results/latest.json (the figures and the raw samples), latest.md (the table) and the
plots (bench/_plots.py: round_trip.png, stall.png, throughput.png); with ``--blender-5.2``,
blender-5.2.json, .md and blender-5.2-*.png. Exit status 1 if a target was missed or a run failed.
docs/performance.md says what each line measures; bench/_harness.py how a bench is built.
"""

from __future__ import annotations

import sys

import _harness
import bench_async
import bench_background
import bench_cluster
import bench_gui
import bench_process

#: Every bench, in the table's order (each runs in this order too); ``--skip-<KEY>`` leaves one out.
BENCHES = (bench_background, bench_gui, bench_process, bench_async, bench_cluster)


def main(argv: list[str]) -> int:
    skips = [bench.KEY for bench in BENCHES]
    return _harness.main(argv, __file__, __doc__, BENCHES, "latest", "blender-5.2", skips, table=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
