"""Demo assets for the Asset Downloader: a small HTTP server on 127.0.0.1.

It runs as coroutines on Blender's main thread, on the asyncio loop of
mainthread_tasks, like the downloads themselves: the add-on starts no thread.
serve() starts it on first use and returns the assets' base URL; stop() closes
it (the add-on's unregister() does; so do its tests).
"""

from __future__ import annotations

import asyncio
import json

DELAY = 0.15  # seconds per file: slow enough to watch the progress
REQUEST_TIMEOUT = 10.0  # seconds for a client to send its request

_server: asyncio.Server | None = None


async def serve() -> str:
    """Start serving, unless it already does; the base URL of the assets."""
    global _server
    if _server is None or _server.get_loop() is not asyncio.get_running_loop():
        _server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    return _base_url(_server.sockets[0].getsockname()[1])


def stop() -> None:
    """Stop listening (on the main thread, where the loop runs)."""
    global _server
    if _server is not None:
        if not _server.get_loop().is_closed():
            _server.close()
        _server = None


def asset(index: int, base_url: str) -> dict:
    """The asset file ``<index>.json``."""
    return {
        "name": f"asset_{index:03d}",
        "size": 0.6 + 0.05 * (index % 5),
        "location": [(index % 6) * 1.5, (index // 6) * 1.5, 0.0],
        "url": f"{base_url}/{index}.json",
    }


def _base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/assets"


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        request = await asyncio.wait_for(
            reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT
        )
        path = request.split(b" ", 2)[1].decode("ascii")
        index = int(path.removeprefix("/assets/").removesuffix(".json"))
    except (
        ValueError,
        IndexError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        asyncio.TimeoutError,
    ):
        writer.write(b"HTTP/1.0 404 Not Found\r\n\r\n")
    else:
        await asyncio.sleep(DELAY)
        body = json.dumps(
            asset(index, _base_url(writer.get_extra_info("sockname")[1]))
        ).encode()
        writer.write(
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body
        )
    finally:
        writer.close()
