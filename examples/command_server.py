"""A socket command bridge (the shape of AI/MCP bridges), done safely.

A server thread accepts line-delimited JSON requests such as
``{"command": "create_object", "params": {"name": "Cube", "location": [0, 0, 1]}}``
and answers one JSON line each. Safety rules it shows:

- it binds 127.0.0.1 only (refuses any other host), so nothing off this machine can reach it;
- only the named commands in ``COMMANDS`` exist; each checks its parameters' names and types;
  nothing received is ever evaluated as code;
- the socket thread never touches ``bpy``: each command runs on the main thread via ``call_on_main``.

In Blender's UI (the add-on enabled) the timer runs the commands. In ``--background``:

    blender --background --factory-startup --python examples/command_server.py -- --seconds 30

serves for 30 s while the main thread runs the commands with ``pump()``.
"""

from __future__ import annotations

import json
import socketserver
import sys
import threading
import time

from mainthread_tasks import SchedulerStopped, call_on_main, is_main_thread, pump

LOOPBACK = "127.0.0.1"
MAX_REQUEST_BYTES = 64 * 1024


class CommandError(ValueError):
    """A request the bridge refuses; the message goes back to the client."""


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
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise CommandError(f"{key!r} must be a list of 3 numbers")
    return tuple(float(v) for v in value)


def cmd_ping(params: dict) -> dict:
    return {"pong": True}


def cmd_create_object(params: dict) -> dict:
    bpy = _bpy()
    name, location = _name(params), _vector(params, "location")
    obj = bpy.data.objects.new(name, None)
    obj.location = location
    bpy.context.scene.collection.objects.link(obj)
    return {"name": obj.name}


def cmd_list_objects(params: dict) -> dict:
    return {"objects": sorted(_bpy().data.objects.keys())}


def cmd_delete_object(params: dict) -> dict:
    bpy = _bpy()
    obj = bpy.data.objects.get(_name(params))
    if obj is None:
        raise CommandError(f"no object named {params['name']!r}")
    bpy.data.objects.remove(obj)
    return {"deleted": params["name"]}


#: The whole command set: name -> (function, allowed parameter names). Nothing else can run.
COMMANDS = {
    "ping": (cmd_ping, frozenset()),
    "create_object": (cmd_create_object, frozenset({"name", "location"})),
    "list_objects": (cmd_list_objects, frozenset()),
    "delete_object": (cmd_delete_object, frozenset({"name"})),
}


def handle_request(line: bytes) -> dict:
    """Decode one request, check it against the whitelist, run it on the main thread. Any thread."""
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"ok": False, "error": "request must be one line of JSON"}
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        return {"ok": False, "error": 'request must be {"command": NAME, "params": {...}}'}
    entry = COMMANDS.get(request["command"])
    if entry is None:
        return {"ok": False, "error": f"unknown command; allowed: {sorted(COMMANDS)}"}
    fn, allowed = entry
    params = request.get("params", {})
    if not isinstance(params, dict) or not set(params) <= allowed:
        return {"ok": False, "error": f"params must be an object with keys from {sorted(allowed)}"}
    try:
        return {"ok": True, "result": call_on_main(fn, params)}
    except CommandError as exc:
        return {"ok": False, "error": str(exc)}
    except SchedulerStopped:
        return {"ok": False, "error": "Blender is shutting down"}
    except Exception as exc:  # a bug in a command must not kill the connection thread
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_REQUEST_BYTES:
                reply = {"ok": False, "error": "request too long"}
            else:
                reply = handle_request(line)
            self.wfile.write(json.dumps(reply).encode() + b"\n")


class CommandServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0, host: str = LOOPBACK):
        if host != LOOPBACK:
            raise ValueError(f"the command bridge listens on {LOOPBACK} only, not {host!r}")
        super().__init__((host, port), _Handler)


def start_server(port: int = 0) -> tuple[CommandServer, threading.Thread]:
    """Start serving on 127.0.0.1:port (0: any free port) in a daemon thread."""
    server = CommandServer(port)
    thread = threading.Thread(target=server.serve_forever, name="command-bridge", daemon=True)
    thread.start()
    return server, thread


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="command_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    server, thread = start_server(args.port)
    print(f"command bridge on {LOOPBACK}:{server.server_address[1]}, commands: {sorted(COMMANDS)}", flush=True)
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:  # --background: the main thread runs the commands
            pump(0.05)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []))
