"""Headless demo: worker threads download files; every bpy call runs on the main thread.

Run inside Blender (``python3 scripts/demo.py`` builds the add-on, installs it and runs this):

    blender --background --factory-startup --python examples/download_demo.py -- [--files N] [--save out.blend]

A local HTTP server (127.0.0.1 only) serves N small JSON "asset" files. One worker thread per file
downloads it (I/O: fine in a thread) and hands the bpy part -- creating a mesh object from the
asset -- to the main thread with ``call_on_main``. ``joined_threads`` joins the workers and, since
Blender timers never fire in --background, runs their main-thread calls while it waits.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bpy

import mainthread_tasks
from mainthread_tasks import call_on_main, joined_threads, main_thread, post_on_main

off_main_bpy_calls = []  # every bpy-touching function below records a violation here


def asset(index: int) -> dict:
    """The content the server hands out for /asset/<index>.json."""
    return {"name": f"asset_{index:02d}", "location": [index * 2.5, 0.0, 0.0], "size": 0.5 + 0.1 * index}


def latency(index: int) -> float:
    """A little network latency before the server answers, different per file (seconds)."""
    return 0.05 + 0.01 * (index % 5)


class AssetServer(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            index = int(self.path.rsplit("/", 1)[-1].split(".")[0])
        except ValueError:
            self.send_error(404)
            return
        time.sleep(latency(index))
        body = json.dumps(asset(index)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # keep the demo output readable
        pass


def make_object(spec: dict, nbytes: int, worker: str) -> str:
    """bpy work: build a cube mesh for one downloaded asset. Called on the main thread."""
    if not mainthread_tasks.is_main_thread():
        off_main_bpy_calls.append(spec["name"])
    s = spec["size"]
    verts = [(x * s, y * s, z * s) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh = bpy.data.meshes.new(spec["name"])
    mesh.from_pydata(verts, [], faces)
    obj = bpy.data.objects.new(spec["name"], mesh)
    obj.location = spec["location"]
    obj["downloaded_bytes"] = nbytes
    obj["downloaded_by"] = worker
    bpy.context.scene.collection.objects.link(obj)
    return obj.name


@main_thread
def report(line: str) -> None:
    """Progress lines go through the main thread too, so they never interleave mid-line."""
    print(line, flush=True)


def download(url: str) -> None:
    """Worker thread: I/O only; the bpy work goes to the main thread."""
    worker = threading.current_thread().name
    with urllib.request.urlopen(url, timeout=30) as response:
        data = response.read()
    spec = json.loads(data)
    name = call_on_main(make_object, spec, len(data), worker)  # blocks until the main thread made it
    post_on_main(report, f"  main thread created {name:<10} ({len(data)} bytes, downloaded by {worker})")


def start(prog: str, argv: list[str]) -> argparse.Namespace:
    """The download demos' options (``--files N``, ``--save PATH``); prints which package and Blender run."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--save", help="save the resulting .blend here")
    args = parser.parse_args(argv)
    print(f"mainthread_tasks {mainthread_tasks.__version__} from {mainthread_tasks.__file__}")
    print(f"Blender {bpy.app.version_string}, background={bpy.app.background}")
    return args


def main(argv: list[str]) -> int:
    args = start("download_demo", argv)
    server = ThreadingHTTPServer(("127.0.0.1", 0), AssetServer)
    # Started before the block: joined_threads waits for threads started inside it.
    server_thread = threading.Thread(target=server.serve_forever, name="asset-server", daemon=True)
    server_thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/asset"
    print(f"serving {args.files} assets on {base}/; one download thread each")

    before = set(bpy.data.objects.keys())
    started = time.perf_counter()
    try:
        with joined_threads(timeout=120) as scope:
            for i in range(args.files):
                scope.start(download, f"{base}/{i}.json")
    finally:
        server.shutdown()
        server.server_close()
        server_thread.join(10)
    elapsed = time.perf_counter() - started

    created = sorted(set(bpy.data.objects.keys()) - before)
    stats = mainthread_tasks.stats()
    print(f"\n{len(created)} objects created from {args.files} downloads in {elapsed:.2f} s")
    print(f"bpy calls made off the main thread: {len(off_main_bpy_calls)}")
    print(
        f"scheduler: submitted={stats.submitted} completed={stats.completed} failed={stats.failed} "
        f"cancelled={stats.cancelled} pending={stats.pending} longest task={stats.longest_task * 1000:.2f} ms"
    )
    if args.save:
        bpy.ops.wm.save_as_mainfile(filepath=args.save)
        print(f"saved {args.save}")
    ok = len(created) == args.files and not off_main_bpy_calls and stats.failed == 0 and stats.pending == 0
    print("DOWNLOAD DEMO OK" if ok else "DOWNLOAD DEMO FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    sys.exit(main(argv))
