"""Headless demo: heavy vertex math in worker processes, the results applied to meshes on the main thread.

    blender --background --factory-startup --python examples/process_mesh.py -- \
        [--meshes N] [--grid G] [--save out.blend]

Builds N grid meshes of G x G vertices. For each, the main thread reads the vertex coordinates
(``foreach_get``) and hands them with ``run_in_process`` to a worker process, which computes a
ripple displacement in pure Python (``examples/mesh_math.py``: a module of its own, since a worker
process cannot import this script, Blender's ``__main__``). As each result comes back, a
done-callback writes it into its mesh (``foreach_set``). Done-callbacks run on the main thread,
where bpy is safe; no thread is started at all. Waiting on the futures here, on the main thread,
is what reads the results in ``--background``; in the UI the add-on's timer does it.

Then it computes one mesh on the main thread, to show the time the processes saved and to check
their result.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import threading
import time
from array import array

import bpy

EXAMPLES = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, EXAMPLES)  # mesh_math, next to this script
sys.path.append(os.path.dirname(EXAMPLES))  # run from a checkout: the package, unless the add-on is installed
import mainthread_tasks  # noqa: E402 - after the sys.path entries above
import mesh_math  # noqa: E402 - after the sys.path entries above
from mainthread_tasks import is_main_thread, run_in_process, set_process_workers  # noqa: E402 - after the sys.path entries above

off_main_bpy_calls = []


def make_grid(name: str, size: int, offset: float) -> bpy.types.Object:
    """bpy work (main thread): a flat grid mesh of size x size vertices, 4 units wide."""
    step = 4.0 / (size - 1)
    verts = [(offset + x * step - 2.0, y * step - 2.0, 0.0) for y in range(size) for x in range(size)]
    faces = [
        (y * size + x, y * size + x + 1, (y + 1) * size + x + 1, (y + 1) * size + x)
        for y in range(size - 1)
        for x in range(size - 1)
    ]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def coordinates(mesh: bpy.types.Mesh) -> array:
    """bpy work (main thread): the mesh's vertex coordinates as a flat array('f')."""
    coords = array("f", bytes(4 * 3 * len(mesh.vertices)))
    mesh.vertices.foreach_get("co", coords)
    return coords


def apply(mesh_name: str, future) -> None:
    """Done-callback: write a worker's result into its mesh. Runs on the main thread."""
    if not is_main_thread():
        off_main_bpy_calls.append(mesh_name)
    mesh = bpy.data.meshes[mesh_name]
    mesh.vertices.foreach_set("co", future.result())
    mesh.update()


def waves(index: int, count: int = 24) -> list[tuple[float, float, float]]:
    """Each mesh gets its own interference pattern: ``count`` wave sources on a spiral around it."""
    return [
        (r * math.cos(a) + index * 5.0, r * math.sin(a), 0.3 * index)
        for r, a in ((1.0 + 2.0 * k / count, 2.0 * math.pi * k * 5 / count) for k in range(count))
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="process_mesh.py")
    parser.add_argument("--meshes", type=int, default=8)
    parser.add_argument("--grid", type=int, default=150, help="vertices along each side of a mesh")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="worker processes (in the background the main thread only waits, so use every core)",
    )
    parser.add_argument("--save", help="save the result as a .blend file")
    args = parser.parse_args(argv)

    set_process_workers(args.workers)
    objects = [make_grid(f"ripple_{i}", args.grid, i * 5.0) for i in range(args.meshes)]
    # Once per session: find Blender's Python and start the worker processes (one task each).
    started = time.perf_counter()
    for future in [run_in_process(int) for _ in range(args.workers)]:
        future.result()
    start_up = time.perf_counter() - started

    started = time.perf_counter()
    futures = []
    for i, obj in enumerate(objects):
        future = run_in_process(mesh_math.ripple, coordinates(obj.data), waves(i), 0.4, 1.2)
        future.add_done_callback(functools.partial(apply, obj.data.name))
        futures.append(future)
    for future in futures:
        future.result()  # on the main thread: reads results (and runs the callbacks) while it waits
    in_processes = time.perf_counter() - started

    # The same work for one mesh on the main thread: what each mesh would have cost without processes.
    started = time.perf_counter()
    expected = mesh_math.ripple(coordinates(objects[0].data), waves(0), 0.4, 1.2)
    on_main = time.perf_counter() - started
    got = coordinates(objects[0].data)
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-6, (
        "the worker's result differs from the main thread's"
    )
    heights = [max(coordinates(obj.data)[2::3]) for obj in objects]
    assert all(h > 0.05 for h in heights), f"a mesh was not displaced: {heights}"

    vertices = args.grid * args.grid
    s = mainthread_tasks.stats()
    print(
        f"{args.meshes} meshes of {vertices:,} vertices displaced in worker processes in {in_processes:.2f} s "
        f"({s.processes} processes, {s.process_completed} tasks, {s.process_failed} failed)"
    )
    print(f"(starting the worker processes took {start_up:.2f} s, once per session)")
    print(
        f"one mesh on the main thread: {on_main:.2f} s, so {args.meshes} would take ~{on_main * args.meshes:.2f} s "
        f"({on_main * args.meshes / in_processes:.1f}x the time)"
    )
    print(f"highest vertex per mesh: {', '.join(f'{h:.2f}' for h in heights)}")
    print(f"threads in Blender now: {[t.name for t in threading.enumerate()]}")
    print(f"bpy calls made off the main thread: {len(off_main_bpy_calls)}")
    if args.save:
        bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args.save))
        print(f"saved {args.save}")
    ok = not off_main_bpy_calls and s.process_completed == args.meshes + args.workers and threading.active_count() == 1
    print("PROCESS MESH OK" if ok else "PROCESS MESH FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []))
