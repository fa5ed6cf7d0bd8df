"""A socket command bridge (the shape of AI/MCP bridges), done safely: asyncio on the main thread, no thread.

Clients send line-delimited JSON requests such as
``{"token": "...", "command": "create_object", "params": {"name": "Cube", "location": [0, 0, 1]}}``
and get one JSON line back for each: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
The server is a coroutine on Blender's main thread (``run_async``): each connection is a coroutine
too, so a command calls ``bpy`` directly, and Blender gets no thread at all.

What it does against other users of the same machine, and against a web page in a browser there:

- It binds 127.0.0.1 only, and refuses any other host.
- Every request carries the session's token: 32 random bytes (``secrets``), written with the port
  to a connection file only the owner can read (mode 0600, in a directory of mode 0700; see
  ``examples/command_client.py``), and compared with ``hmac.compare_digest``. A request without
  the right token gets an error and its connection is closed. On Windows, where access is an ACL
  and file modes mean nothing, the default place is in the user's profile (``%LOCALAPPDATA%``),
  which Windows lets only that user, administrators and SYSTEM read; a directory given with
  ``--connection-file`` is not checked there: keep it inside your profile.
- Only the named commands in ``COMMANDS`` exist; each checks its parameters' names and types;
  nothing received is ever evaluated as code.
- At most ``max_connections`` connections at once; a connection beyond them gets an error line and
  is closed.
- A request must arrive whole, newline included, within ``request_timeout`` (for a new connection:
  from connecting, so a client without the token holds a slot that long at most); between requests
  a connection may stay silent for ``idle_timeout``; a line longer than ``max_request_bytes`` is
  refused as soon as that much is buffered, never read whole. A client that does not read its
  answers is cut off after ``request_timeout`` too.

Headless, ``run_forever`` runs the server until Ctrl-C or SIGTERM (or ``--seconds``)::

    blender --background --factory-startup --python examples/command_server.py -- [--seconds N] [--connection-file PATH]

In Blender's UI, run the same script: it returns at once and the add-on's timer serves.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import secrets
import socket
import stat
import sys
from pathlib import Path

EXAMPLES = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, EXAMPLES)  # command_client, next to this script
sys.path.append(os.path.dirname(EXAMPLES))  # run from a checkout: the package, unless the add-on is installed
from command_client import default_connection_file  # noqa: E402 - after the sys.path entries above
from mainthread_tasks import is_main_thread, main_loop, run_async, run_forever  # noqa: E402 - after the sys.path entries above

LOOPBACK = "127.0.0.1"
MAX_REQUEST_BYTES = 64 * 1024  # one request line, newline excluded
MAX_CONNECTIONS = 4
REQUEST_TIMEOUT = 10.0  # seconds for a request to arrive whole once begun, and for its answer to be read
IDLE_TIMEOUT = 300.0  # seconds a connection may stay silent between requests

logger = logging.getLogger("command_server")


class CommandError(ValueError):
    """A request the bridge refuses; the message goes back to the client."""


class _Hangup(Exception):
    """Answer the client with this message, then close the connection."""


def _bpy():
    import bpy  # only ever called on the main thread

    assert is_main_thread()
    return bpy


def _name(params: dict, key: str = "name") -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value or len(value) > 63:
        raise CommandError(f"{key!r} must be a non-empty string of at most 63 characters")
    return value


def _vector(params: dict, key: str) -> tuple[float, float, float]:
    value = params.get(key, [0, 0, 0])
    if not (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise CommandError(f"{key!r} must be a list of 3 finite numbers")
    return tuple(float(v) for v in value)


# The commands check their parameters before they touch bpy.


def cmd_ping(params: dict) -> dict:
    return {"pong": True}


def cmd_create_object(params: dict) -> dict:
    name, location = _name(params), _vector(params, "location")
    bpy = _bpy()
    obj = bpy.data.objects.new(name, None)
    obj.location = location
    bpy.context.scene.collection.objects.link(obj)
    return {"name": obj.name}


def cmd_list_objects(params: dict) -> dict:
    return {"objects": sorted(_bpy().data.objects.keys())}


def cmd_delete_object(params: dict) -> dict:
    name = _name(params)
    bpy = _bpy()
    obj = bpy.data.objects.get(name)
    if obj is None:
        raise CommandError(f"no object named {name!r}")
    bpy.data.objects.remove(obj)
    return {"deleted": name}


#: The whole command set: name -> (function, allowed parameter names). Nothing else can run.
COMMANDS = {
    "ping": (cmd_ping, frozenset()),
    "create_object": (cmd_create_object, frozenset({"name", "location"})),
    "list_objects": (cmd_list_objects, frozenset()),
    "delete_object": (cmd_delete_object, frozenset({"name"})),
}


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, in a directory only its owner can use.

    Makes the directory (mode 0700) if missing. Raises ValueError if the directory is a symlink,
    belongs to another user, or others may enter it: whoever reads the file may send commands.
    On Windows only the first is checked (see the module's docstring); Python 3.11.10, 3.12.4 and
    later make a missing directory with an ACL for the user and administrators alone (CVE-2024-4030),
    older ones let it inherit its parent's.
    """
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    others = os.name == "posix" and (info.st_uid != os.getuid() or info.st_mode & 0o077)  # Windows: an ACL
    if not stat.S_ISDIR(info.st_mode) or others:
        raise ValueError(
            f"{directory} must be a directory of yours that only you can use (mode 0700): the "
            f"connection file in it holds the token that lets a client run commands"
        )
    path.unlink(missing_ok=True)  # a stale file from an earlier session; nobody else can write here
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


class CommandServer:
    """The command bridge: listening on 127.0.0.1 from construction, serving while ``serve()`` runs.

    Construct it on any thread; run ``serve()`` on the main thread's loop (``start_server`` does
    both). Once constructed, the connection file holds the port and the token, and clients can
    connect (they are answered once ``serve()`` runs).

    Raises:
        ValueError: ``host`` is not 127.0.0.1, or the connection file's directory is not private.
        OSError: the port is taken.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = LOOPBACK,
        *,
        connection_file: str | os.PathLike | None = None,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ):
        if host != LOOPBACK:
            raise ValueError(f"the command bridge listens on {LOOPBACK} only, not {host!r}")
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_request_bytes = max_request_bytes
        self.token = secrets.token_urlsafe(32)
        self.answered = 0  # requests answered (including refused commands)
        self.hung_up = 0  # connections closed by the server: bad token, timeout, too long, too many
        self.connection_file = Path(connection_file) if connection_file else default_connection_file()
        self._socket = socket.create_server((host, port), backlog=max_connections)
        self.address = self._socket.getsockname()
        try:
            write_private_file(
                self.connection_file, json.dumps({"host": host, "port": self.address[1], "token": self.token})
            )
        except BaseException:
            self._socket.close()
            raise
        self._tasks: set[asyncio.Task] = set()  # every connection's coroutine, refused ones too
        self._serving = 0  # connections admitted and not yet closed
        self._stop_requested = False
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connections(self) -> int:
        """Connections admitted and still open (at most ``max_connections``)."""
        return self._serving

    async def serve(self) -> None:
        """Answer clients until ``stop()`` or until cancelled, then close everything. Main thread's loop.

        On the way out it closes the listening socket and every connection and removes the
        connection file.
        """
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        server = None
        try:
            if not self._stop_requested:
                server = await asyncio.start_server(
                    self._connection, sock=self._socket, limit=self.max_request_bytes, backlog=self.max_connections
                )
                await self._stop.wait()
        finally:
            if server is not None:
                server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if server is not None:
                await server.wait_closed()
            self._socket.close()
            self._remove_connection_file()

    def _remove_connection_file(self) -> None:
        try:
            if json.loads(self.connection_file.read_text()).get("token") == self.token:
                self.connection_file.unlink()  # not a later session's file, written over ours
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        """Make ``serve()`` close everything and return. Any thread; does not wait."""
        self._stop_requested = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop.set)  # type: ignore[union-attr] - made before _loop
            except RuntimeError:  # the loop closed meanwhile, and serve() with it
                pass

    def answer(self, line: bytes) -> dict:
        """The answer to one request line. Main thread (commands call bpy).

        Raises:
            _Hangup: the request is not a JSON object with the session's token.
        """
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise _Hangup("request must be one line of JSON") from None
        supplied = request.get("token") if isinstance(request, dict) else None
        if not isinstance(supplied, str) or not hmac.compare_digest(
            supplied.encode("utf-8", "surrogatepass"), self.token.encode()
        ):
            raise _Hangup("missing or wrong token (it is in the server's connection file)")
        command = request.get("command")
        entry = COMMANDS.get(command) if isinstance(command, str) else None
        if entry is None:
            return {"ok": False, "error": f"unknown command; allowed: {sorted(COMMANDS)}"}
        fn, allowed = entry
        params = request.get("params", {})
        if not isinstance(params, dict) or not set(params) <= allowed:
            return {"ok": False, "error": f"params must be an object with keys from {sorted(allowed)}"}
        try:
            return {"ok": True, "result": fn(params)}
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a bug in a command must not end the connection
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    # -- connections ----------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", "?")  # None if the client is already gone
        task = asyncio.current_task()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        admitted = self._serving < self.max_connections
        self._serving += admitted
        try:
            if not admitted:
                raise _Hangup(f"too many connections (at most {self.max_connections}); try again later")
            authenticated = False
            while True:
                line = await self._read_request(reader, idle=authenticated)
                if line is None:
                    return
                reply = self.answer(line)
                authenticated = True
                self.answered += 1
                await self._send(writer, reply)
        except _Hangup as exc:
            self.hung_up += 1
            logger.warning("command_server: closing %s:%s: %s", *peer[:2], exc)
            if not writer.transport.get_write_buffer_size():  # else the client is not reading anyway
                try:
                    await self._send(writer, {"ok": False, "error": str(exc)})
                except (_Hangup, OSError):
                    pass
        except OSError:  # the client went away mid-answer
            pass
        except Exception:  # keep serving the others, and keep asyncio from logging it at exit
            logger.exception("command_server: connection from %s:%s failed", *peer[:2])
        finally:
            self._serving -= admitted
            await self._close(writer)

    async def _read_request(self, reader: asyncio.StreamReader, idle: bool) -> bytes | None:
        """One request line without its newline; None if the client closed between requests."""
        first = b""
        if idle:  # between requests: wait for a first byte as long as idle_timeout allows
            first = await self._within(
                reader.read(1), self.idle_timeout, f"no request for {self.idle_timeout:g} s: closing the connection"
            )
            if not first:
                return None
            if first == b"\n":
                return b""
        try:
            rest = await self._within(
                reader.readuntil(b"\n"),
                self.request_timeout,
                f"request not finished (no newline) within {self.request_timeout:g} s",
            )
        except asyncio.IncompleteReadError as exc:
            if first or exc.partial:
                raise _Hangup("request ended without a newline") from None
            return None
        except asyncio.LimitOverrunError:  # the buffer outgrew the limit: refused before the rest is read
            raise _Hangup(f"request longer than {self.max_request_bytes} bytes") from None
        line = first + rest[:-1]
        if len(line) > self.max_request_bytes:
            raise _Hangup(f"request longer than {self.max_request_bytes} bytes")
        return line

    async def _send(self, writer: asyncio.StreamWriter, reply: dict) -> None:
        writer.write(json.dumps(reply).encode() + b"\n")
        await self._within(writer.drain(), self.request_timeout, "answer not read in time")

    @staticmethod
    async def _within(awaitable, seconds: float, message: str):
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except asyncio.TimeoutError:
            raise _Hangup(message) from None

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:  # a client that reads nothing would keep an unsent answer, and the socket, forever
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (asyncio.TimeoutError, OSError):
            writer.transport.abort()


def start_server(port: int = 0, **options):
    """Start a CommandServer on the main thread's loop; return it and the Future of its ``serve()``.

    Any thread. The server answers while the loop is stepped: by the add-on's timer in the UI,
    by ``run_forever``/``pump``/the Future's ``result()`` headless. ``options``: CommandServer's.
    """
    server = CommandServer(port, **options)
    try:
        return server, run_async(server.serve())
    except BaseException:
        server._socket.close()
        server._remove_connection_file()
        raise


def main(argv: list[str]) -> int:
    import argparse

    import bpy

    import mainthread_tasks

    parser = argparse.ArgumentParser(prog="command_server")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C, SIGTERM)")
    parser.add_argument("--connection-file", default=None, help=f"default: {default_connection_file()}")
    args = parser.parse_args(argv)
    server, serving = start_server(args.port, connection_file=args.connection_file)
    print(
        f"command server on {LOOPBACK}:{server.address[1]}, commands: {sorted(COMMANDS)}\n"
        f"its port and token are in {server.connection_file} (mode 0600)",
        flush=True,
    )
    if getattr(bpy.app, "background", True) is False:  # Blender's UI: the add-on's timer serves
        mainthread_tasks.register()
        print("serving from Blender's UI until it quits; no thread was started", flush=True)
        return 0
    if args.seconds is not None:
        main_loop().call_later(args.seconds, server.stop)
    run_forever(until=serving)  # headless: until stopped, Ctrl-C or SIGTERM
    server.stop()
    serving.result(timeout=10)  # on the main thread result() steps the loop while serve() closes up
    print(
        f"command server stopped: {server.answered} requests answered, {server.hung_up} connections "
        f"refused or cut off; connection file removed: {not server.connection_file.exists()}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []))
