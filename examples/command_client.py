"""A client for ``examples/command_server.py``, from another process (plain Python: no bpy, no add-on).

    python3 examples/command_client.py [--connection-file PATH] [COMMAND [PARAMS_JSON]] ...
    python3 examples/command_client.py ping create_object '{"name": "Cube", "location": [0, 0, 1]}'
    python3 examples/command_client.py            # a short session: a few commands, then an attempt without the token

The server writes its port and its session token to a connection file that only its owner can read
(mode 0600, in a directory of mode 0700); whoever can read that file may send commands. This module
owns that file's format and default place, so that the server and its clients agree.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

#: The connection file's name in its directory.
CONNECTION_FILE_NAME = "command_server.json"


def default_connection_file() -> Path:
    """Where the server writes its port and token unless told otherwise: a directory only this user can use.

    ``$XDG_RUNTIME_DIR`` (per user, mode 0700, made by the login manager) where it is set, else a
    directory named after the user id in the temporary directory (the server makes it with mode
    0700 and refuses it if another user made it first). On Windows: ``%LOCALAPPDATA%``, in the
    user's profile, which only the user, administrators and SYSTEM may read.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if os.name == "nt":
        directory = Path(os.environ.get("LOCALAPPDATA") or tempfile.gettempdir()) / "mainthread_tasks"
    elif runtime:
        directory = Path(runtime) / "mainthread_tasks"
    else:
        directory = Path(tempfile.gettempdir()) / f"mainthread_tasks-{os.getuid()}"
    return directory / CONNECTION_FILE_NAME


class CommandFailed(Exception):
    """The server answered ``{"ok": false, "error": ...}``; the message is its error."""


class CommandClient:
    """One connection to the command server; ``call()`` sends a command and returns its result.

    Blocking socket I/O: use it from another process (or a thread), never from Blender's main
    thread while that thread runs the server -- it would wait for an answer the main thread can
    no longer give.
    """

    def __init__(self, connection_file: str | os.PathLike | None = None, timeout: float = 10.0):
        info = json.loads(Path(connection_file or default_connection_file()).read_text())
        self.token = info["token"]
        self._socket = socket.create_connection((info["host"], info["port"]), timeout=timeout)
        self._stream = self._socket.makefile("rwb")

    def call(self, command: str, **params):
        """Run ``command`` with ``params`` in Blender; its result. Raises CommandFailed if refused."""
        return self.send({"token": self.token, "command": command, "params": params})

    def send(self, request: dict):
        """Send one request as it is (``call`` adds the token) and return the result."""
        self._stream.write(json.dumps(request).encode() + b"\n")
        self._stream.flush()
        line = self._stream.readline()
        if not line:
            raise CommandFailed("the server closed the connection")
        reply = json.loads(line)
        if not reply["ok"]:
            raise CommandFailed(reply["error"])
        return reply["result"]

    def close(self) -> None:
        self._stream.close()
        self._socket.close()

    def __enter__(self) -> CommandClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _show(label: str, action) -> bool:
    try:
        print(f"client: {label} -> {json.dumps(action())}", flush=True)
        return True
    except CommandFailed as exc:
        print(f"client: {label} -> refused: {exc}", flush=True)
        return False


def demo_session(connection_file) -> bool:
    """A few commands with the token, a bad one, and one without the token. True if each went as expected."""
    with CommandClient(connection_file) as client:
        expected = [
            _show("ping", lambda: client.call("ping")),
            _show(
                'create_object {"name": "from_client", "location": [0, 0, 2]}',
                lambda: client.call("create_object", name="from_client", location=[0, 0, 2]),
            ),
            _show("list_objects", lambda: client.call("list_objects")),
            not _show(
                'create_object {"name": "bad", "location": "up"}',
                lambda: client.call("create_object", name="bad", location="up"),
            ),
            _show('delete_object {"name": "from_client"}', lambda: client.call("delete_object", name="from_client")),
        ]
    with CommandClient(connection_file) as intruder:
        expected.append(not _show("ping without the token", lambda: intruder.send({"command": "ping"})))
    return all(expected)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="command_client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connection-file", default=None, help=f"default: {default_connection_file()}")
    parser.add_argument("commands", nargs="*", help="COMMAND [PARAMS_JSON] ...; none: a short demo session")
    args = parser.parse_args(argv)
    if not args.commands:
        return 0 if demo_session(args.connection_file) else 1
    words = list(args.commands)
    ok = True
    with CommandClient(args.connection_file) as client:
        while words:
            command = words.pop(0)
            params = json.loads(words.pop(0)) if words and words[0].startswith("{") else {}
            ok &= _show(
                f"{command} {json.dumps(params)}" if params else command,
                lambda command=command, params=params: client.call(command, **params),
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
