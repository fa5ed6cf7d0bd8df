"""Headless demo: the download demo with asyncio on the main thread -- no thread at all.

    blender --background --factory-startup --python examples/async_download.py -- [--files N] [--save out.blend]

The same assets and the same bpy work as ``examples/download_demo.py``, but the local HTTP server
(``asyncio.start_server`` on 127.0.0.1) and the N downloads (``asyncio.open_connection``) are
coroutines on Blender's main thread, started with ``run_async``. While a download waits for the
network the other coroutines run; once its bytes are in, it creates its object with ``bpy``
directly: it is on the main thread. Here in ``--background``, ``future.result()`` on the main
thread steps the loop while it waits. In Blender's UI you would start the same coroutine with
``run_async`` and return (never wait on it there): the add-on's timer steps the loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import bpy

EXAMPLES = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, EXAMPLES)  # download_demo, next to this script
sys.path.append(os.path.dirname(EXAMPLES))  # run from a checkout: the package, unless the add-on is installed
import download_demo  # noqa: E402 - the assets and the bpy work, shared with the thread version
from mainthread_tasks import run_async  # noqa: E402 - after the sys.path entries above

HOST = "127.0.0.1"
threads_seen: set[str] = set()  # every thread alive at some point of a download


async def serve_asset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The HTTP server's side of one connection: ``GET /asset/<index>.json`` answered after a latency."""
    request_line = await reader.readline()
    while (await reader.readline()).strip():  # the headers, up to the blank line
        pass
    try:
        index = int(request_line.split()[1].rsplit(b"/", 1)[-1].split(b".")[0])
    except (IndexError, ValueError):
        writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    else:
        await asyncio.sleep(download_demo.latency(index))
        body = json.dumps(download_demo.asset(index)).encode()
        writer.write(
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def download(port: int, path: str) -> str:
    """One download; then the bpy work, right here: a coroutine runs on the main thread."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    threads_seen.update(t.name for t in threading.enumerate())
    status = await reader.readline()
    if status.split()[1:2] != [b"200"]:
        raise OSError(f"GET {path}: {status.decode().strip()}")
    headers = {}
    while line := (await reader.readline()).strip():
        key, _, value = line.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    data = await reader.readexactly(int(headers["content-length"]))
    writer.close()
    await writer.wait_closed()
    threads_seen.update(t.name for t in threading.enumerate())
    downloader = f"coroutine {asyncio.current_task().get_name()}"
    name = download_demo.make_object(json.loads(data), len(data), downloader)
    print(f"  main thread created {name:<10} ({len(data)} bytes, downloaded by {downloader})", flush=True)
    return name


async def download_all(files: int) -> list[str]:
    """Serve ``files`` assets and download each, all at once, all on the main thread."""
    server = await asyncio.start_server(serve_asset, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    print(
        f"serving {files} assets on http://{HOST}:{port}/asset/ from a coroutine; one download coroutine each",
        flush=True,
    )
    try:
        return await asyncio.gather(
            *(asyncio.create_task(download(port, f"/asset/{i}.json"), name=f"download-{i + 1}") for i in range(files))
        )
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str]) -> int:
    args = download_demo.start("async_download", argv)
    before = set(bpy.data.objects.keys())
    started = time.perf_counter()
    names = run_async(download_all(args.files)).result(timeout=60)  # main thread: steps the loop meanwhile
    elapsed = time.perf_counter() - started

    created = sorted(set(bpy.data.objects.keys()) - before)
    print(
        f"\n{len(created)} objects created from {args.files} downloads in {elapsed:.2f} s by coroutines "
        f"on the main thread"
    )
    print(f"threads while downloading: {sorted(threads_seen)}")
    print(f"bpy calls made off the main thread: {len(download_demo.off_main_bpy_calls)}")
    if args.save:
        bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args.save))
        print(f"saved {args.save}")
    ok = (
        sorted(names) == created
        and len(created) == args.files
        and threads_seen == {"MainThread"}
        and not download_demo.off_main_bpy_calls
    )
    print("ASYNC DOWNLOAD OK" if ok else "ASYNC DOWNLOAD FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []))
