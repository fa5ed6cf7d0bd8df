"""examples/command_server.py tried as an attacker on the same machine would; and its normal path.

The server is a coroutine on the main thread; the clients here are coroutines on the same loop
(``run_async(...).result()`` steps it), so no thread exists at any point; one test runs the client
in another process, and one (real Blender) runs the server headless in another process.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _wake
from tests import support

EXAMPLES = support.ROOT / "examples"


def _load(name: str):
    saved = list(sys.path)
    try:  # the example puts examples/ and the checkout on sys.path to import its neighbours
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


bridge = _load("command_server")


@pytest.fixture
def private_dir(tmp_path) -> Path:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def serve(private_dir, caplog):
    """serve(**options): a server on the main loop; stopped afterwards, with nothing left behind."""
    started = []

    def start(**options):
        server, future = bridge.start_server(connection_file=private_dir / "server.json", **options)
        started.append((server, future))
        return server

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        yield start
        for server, future in started:
            server.stop()
            assert future.result(timeout=10) is None
            assert not server.connection_file.exists()
            assert server.connections == 0
        _wake.SOURCES.stop("test over")  # closes the loop: a pending task would be reported now
        gc.collect()
    assert support.threads() == [threading.main_thread()]
    noise = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert not noise, noise


def _run(coro, timeout: float = 10.0):
    """Run a client coroutine on the main loop, the server's loop too; the main thread steps both."""
    return mt.run_async(coro).result(timeout=timeout)


class Client:
    """A connection to the server, as a coroutine on the same loop."""

    def __init__(self, server, reader, writer):
        self.server, self.reader, self.writer = server, reader, writer

    @classmethod
    async def connect(cls, server) -> Client:
        reader, writer = await asyncio.open_connection(*server.address)
        return cls(server, reader, writer)

    async def send(self, request) -> dict | None:
        """Send a request (a dict gets the token unless it has one; bytes go as they are); the answer."""
        if isinstance(request, dict):
            request = json.dumps({"token": self.server.token, **request}).encode() + b"\n"
        self.writer.write(request)
        await self.writer.drain()
        return await self.answer()

    async def answer(self) -> dict | None:
        line = await self.reader.readline()
        return json.loads(line) if line else None

    async def closed_by_server(self) -> bool:
        return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:  # the server closed first
            pass


async def _one_shot(server, request) -> tuple[dict | None, bool]:
    client = await Client.connect(server)
    try:
        return await client.send(request), await client.closed_by_server()
    finally:
        await client.close()


# -- where it listens, and who may use it ----------------------------------------------------------

#: File modes are POSIX's: on Windows access is an ACL, which the example leaves to the user's profile
#: (its docstring says so), and os.stat reports no owner nor group bits.
POSIX_MODES = pytest.mark.skipif(support.WINDOWS, reason="POSIX file modes; Windows uses ACLs (see the example)")


def _mode(path: Path) -> int | None:
    """``path``'s permission bits; None on Windows (see POSIX_MODES)."""
    return None if support.WINDOWS else stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "::1", "localhost", "127.0.0.2", "192.168.1.10"])
def test_binds_loopback_only(host, private_dir):
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        bridge.CommandServer(0, host, connection_file=private_dir / "server.json")
    assert not (private_dir / "server.json").exists()


def test_listens_on_loopback_and_writes_the_token_for_its_owner_only(serve, private_dir):
    server = serve()
    assert server.address[0] == "127.0.0.1"
    info = json.loads(server.connection_file.read_text())
    assert info == {"host": "127.0.0.1", "port": server.address[1], "token": server.token}
    assert _mode(server.connection_file) in (0o600, None)
    assert _mode(private_dir) in (0o700, None)
    assert len(server.token) >= 43  # 32 random bytes, URL-safe base64


def test_every_session_has_its_own_token_and_a_stale_file_is_replaced(private_dir):
    stale = private_dir / "server.json"
    stale.write_text('{"token": "old"}')
    stale.chmod(0o644)
    tokens = []
    for _ in range(2):
        server, future = bridge.start_server(connection_file=stale)
        assert _mode(stale) in (0o600, None)
        tokens.append(json.loads(stale.read_text())["token"])
        server.stop()
        future.result(timeout=10)
        assert not stale.exists()
    assert len(set(tokens)) == 2 and "old" not in tokens


def test_stopping_leaves_a_newer_sessions_connection_file(private_dir):
    path = private_dir / "server.json"
    older, older_serving = bridge.start_server(connection_file=path)
    newer, newer_serving = bridge.start_server(connection_file=path)  # written over the older one's
    older.stop()
    older_serving.result(timeout=10)
    assert json.loads(path.read_text())["token"] == newer.token
    newer.stop()
    newer_serving.result(timeout=10)
    assert not path.exists()


@POSIX_MODES
def test_refuses_a_connection_file_others_could_read(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)  # whatever the umask
    with pytest.raises(ValueError, match="only you can use"):
        bridge.CommandServer(connection_file=shared / "server.json")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(private)
    with pytest.raises(ValueError, match="only you can use"):
        bridge.CommandServer(connection_file=link / "server.json")
    if os.getuid() == 0:  # root can hand the directory to another user, as an attacker would pre-create it
        os.chown(private, 65534, -1)
        with pytest.raises(ValueError, match="only you can use"):
            bridge.CommandServer(connection_file=private / "server.json")
    assert not list(tmp_path.rglob("server.json"))


@POSIX_MODES
def test_made_directories_are_private(tmp_path):
    server, future = bridge.start_server(connection_file=tmp_path / "a" / "b" / "server.json")
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    server.stop()
    future.result(timeout=10)


def test_requests_without_the_right_token_are_refused_and_closed(serve, mocker):
    server = serve()
    compare = mocker.spy(bridge.hmac, "compare_digest")
    wrong = [
        {"command": "ping"},  # no token
        {"token": "0" * len(server.token), "command": "ping"},
        {"token": server.token[:-1], "command": "ping"},
        {"token": server.token + "x", "command": "ping"},
        {"token": server.token.upper() if server.token.upper() != server.token else "A", "command": "ping"},
        {"token": 12345, "command": "ping"},
        {"token": None, "command": "ping"},
        {"token": [server.token], "command": "ping"},
    ]

    async def attempts():
        results = []
        for request in wrong:
            line = json.dumps(request).encode() + b"\n"
            results.append(await _one_shot(server, line))
        # a lone surrogate cannot be UTF-8 encoded: still just a wrong token
        results.append(await _one_shot(server, b'{"token": "\\ud800", "command": "ping"}\n'))
        return results

    for answer, closed in _run(attempts()):
        assert answer == {"ok": False, "error": "missing or wrong token (it is in the server's connection file)"}
        assert closed
    assert compare.call_count == 5  # every string token (and only those) went through compare_digest
    assert server.answered == 0 and server.hung_up == len(wrong) + 1


def test_junk_is_refused_and_closed(serve):
    server = serve()

    async def attempts():
        return [
            await _one_shot(server, junk + b"\n")
            for junk in (
                b"GET / HTTP/1.1",  # a web page in a browser, pointed at the port
                b"not json at all",
                b'["command", "ping"]',
                b"\xff\xfe binary",
                b"[" * 50_000,  # nesting deep enough to overflow the parser's recursion
            )
        ]

    answers = _run(attempts())
    errors = [answer["error"] for answer, _closed in answers]
    assert (
        errors
        == ["request must be one line of JSON"] * 2
        + ["missing or wrong token (it is in the server's connection file)"]
        + ["request must be one line of JSON"] * 2
    )
    assert all(closed for _answer, closed in answers)


def test_only_named_commands_with_checked_parameters(serve):
    server = serve()
    refused = [
        {"command": "__import__('os').system('touch /tmp/pwned')"},
        {"command": "eval", "params": {"source": "1+1"}},
        {"command": "exec"},
        {"command": ["ping"]},
        {"command": None},
        {"params": {}},
        {"command": "ping", "params": {"extra": 1}},
        {"command": "ping", "params": ["x"]},
        {"command": "create_object", "params": {"name": "bad", "location": "0,0,0"}},
        {"command": "create_object", "params": {"name": "bad", "location": [1, 2]}},
        {"command": "create_object", "params": {"name": "bad", "location": [1, 2, "3"]}},
        {"command": "create_object", "params": {"name": "bad", "location": [True, 0, 0]}},
        {"command": "create_object", "params": {"name": "", "location": [0, 0, 0]}},
        {"command": "create_object", "params": {"name": "x" * 64}},
        {"command": "create_object", "params": {"name": 5}},
        {"command": "create_object", "params": {"name": "bad", "script": "import os"}},
        {"command": "delete_object", "params": {"name": {"__class__": 1}}},
    ]

    async def session():
        client = await Client.connect(server)
        answers = [await client.send(request) for request in refused]
        non_finite = b'{"token": "%s", "command": "create_object", "params": {"name": "n", "location": [NaN, 0, 0]}}\n'
        answers.append(await client.send(non_finite % server.token.encode()))
        answers.append(await client.send({"command": "ping"}))  # the connection is still open
        await client.close()
        return answers

    answers = _run(session())
    assert answers[-1] == {"ok": True, "result": {"pong": True}}
    assert all(a["ok"] is False for a in answers[:-1]), answers
    for a in answers[:6]:
        assert a["error"].startswith("unknown command")
    assert "3 finite numbers" in answers[-2]["error"]
    assert server.answered == len(answers) and server.hung_up == 0


# -- resources: connections, time, memory ----------------------------------------------------------


def test_too_many_connections_get_an_error_line(serve):
    server = serve(max_connections=2)

    async def crowd():
        first, second = await Client.connect(server), await Client.connect(server)
        assert await first.send({"command": "ping"}) == await second.send({"command": "ping"})
        assert server.connections == 2
        third = await Client.connect(server)
        refused = await third.answer(), await third.closed_by_server()
        await third.close()
        await first.close()
        deadline = time.monotonic() + 5
        while server.connections > 1:  # the server sees the close on its next read
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        fourth = await Client.connect(server)
        admitted = await fourth.send({"command": "ping"})
        await fourth.close()
        await second.close()
        return refused, admitted

    (answer, closed), admitted = _run(crowd())
    assert answer == {"ok": False, "error": "too many connections (at most 2); try again later"} and closed
    assert admitted == {"ok": True, "result": {"pong": True}}


def _timed(coro_fn, *args):
    async def timed():
        started = time.monotonic()
        result = await coro_fn(*args)
        return result, time.monotonic() - started

    return _run(timed())


def test_a_silent_new_connection_is_cut_off_after_the_request_timeout(serve):
    server = serve(request_timeout=0.3, idle_timeout=60)

    async def silent():
        client = await Client.connect(server)
        answer = await client.answer(), await client.closed_by_server()
        await client.close()
        return answer

    (answer, closed), seconds = _timed(silent)
    assert "within 0.3 s" in answer["error"] and closed
    assert 0.25 <= seconds < 3


def test_slow_loris_without_a_newline_is_cut_off(serve):
    server = serve(request_timeout=0.5, idle_timeout=60)

    async def dribble():  # one byte every 0.1 s: each arrives in time, the line never does
        client = await Client.connect(server)
        assert await client.send({"command": "ping"}) == {"ok": True, "result": {"pong": True}}

        async def send_slowly():
            for byte in b'{"token": "' + server.token.encode() + b'", "command": "ping"}':
                client.writer.write(bytes([byte]))
                await asyncio.sleep(0.1)

        started = time.monotonic()
        sending = asyncio.ensure_future(send_slowly())
        answer = await client.answer()  # stop writing once answered: a write after the close fails the reader
        seconds = time.monotonic() - started
        assert not sending.done(), "the line was sent whole before the timeout: make it longer"
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        closed = await client.closed_by_server()
        await client.close()
        return answer, closed, seconds

    answer, closed, seconds = _run(dribble(), timeout=30)
    assert answer == {"ok": False, "error": "request not finished (no newline) within 0.5 s"} and closed
    assert 0.45 <= seconds < 3


def test_an_idle_connection_is_closed_after_the_idle_timeout(serve):
    server = serve(request_timeout=30, idle_timeout=0.4)

    async def idle():
        client = await Client.connect(server)
        await client.send({"command": "ping"})
        answer = await client.answer(), await client.closed_by_server()
        await client.close()
        return answer

    (answer, closed), seconds = _timed(idle)
    assert answer == {"ok": False, "error": "no request for 0.4 s: closing the connection"} and closed
    assert 0.35 <= seconds < 3


def test_an_oversize_line_is_refused_while_it_is_read(serve):
    """No newline ever comes, and the request timeout is long: the size alone ends it, at once."""
    server = serve(request_timeout=60)
    assert server.max_request_bytes == bridge.MAX_REQUEST_BYTES == 64 * 1024

    async def flood():
        return await _one_shot(server, b"x" * (bridge.MAX_REQUEST_BYTES + 4096))

    (answer, closed), seconds = _timed(flood)
    assert answer == {"ok": False, "error": "request longer than 65536 bytes"} and closed
    assert seconds < 5


def test_the_size_limit_is_exact(serve):
    server = serve(max_request_bytes=200)

    def padded(size: int) -> bytes:
        line = json.dumps({"token": server.token, "command": "ping"}).encode()
        return line[:-1] + b" " * (size - len(line)) + b"}\n"

    async def sizes():
        client = await Client.connect(server)
        fits = await client.send(padded(200))
        after_idle = await client.send(padded(200))  # the second request takes the other read path
        too_long = await client.send(padded(201))
        closed = await client.closed_by_server()
        await client.close()
        return fits, after_idle, too_long, closed

    fits, after_idle, too_long, closed = _run(sizes())
    assert fits == after_idle == {"ok": True, "result": {"pong": True}}
    assert too_long == {"ok": False, "error": "request longer than 200 bytes"} and closed


def test_a_client_that_never_reads_its_answers_is_cut_off(serve):
    server = serve(request_timeout=0.5, idle_timeout=60)
    # Small socket buffers (accepted sockets inherit the listening socket's), so that the answers
    # fill them and the transport's buffer after a few thousand requests.
    server._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def never_reads():  # a raw socket: an asyncio stream would read (and buffer) for it
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, server.address)
            ping = json.dumps({"token": server.token, "command": "ping"}).encode() + b"\n"
            sending = asyncio.ensure_future(loop.sock_sendall(sock, ping * 5000))
            started = time.monotonic()
            while server.hung_up == 0:
                assert time.monotonic() - started < 10, f"still served after {server.answered} answers"
                await asyncio.sleep(0.05)
            seconds = time.monotonic() - started
            while server.connections:
                assert time.monotonic() - started < 10
                await asyncio.sleep(0.05)
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        finally:
            sock.close()
        return seconds

    seconds = _run(never_reads(), timeout=30)
    # Filling the socket buffers takes longer under Wine, on a loaded machine 6.6 s once.
    assert 0.45 <= seconds < (5 if sys.platform != "win32" else 9)
    assert 100 < server.answered < 5000


def test_stop_closes_open_connections_and_leaves_no_thread(serve):
    server = serve()
    seen = set()

    async def open_then_stopped():
        client = await Client.connect(server)
        await client.send({"command": "ping"})
        seen.update(support.threads())
        server.stop()
        closed = await client.closed_by_server()
        await client.close()
        return closed

    assert _run(open_then_stopped()) is True
    assert seen == {threading.main_thread()}


def test_a_client_in_another_process(serve):
    """The blocking client of examples/command_client.py, in a process of its own; the main thread serves."""
    server = serve()
    command = [
        sys.executable,
        str(EXAMPLES / "command_client.py"),
        "--connection-file",
        str(server.connection_file),
        "ping",
        "ping",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    try:
        mt.run_forever(until=lambda: proc.poll() is not None or time.monotonic() > deadline)
    finally:
        if proc.poll() is None:
            support.kill_group(proc)
        out = proc.communicate()[0]
    assert proc.returncode == 0, out
    assert out.count('client: ping -> {"pong": true}') == 2, out
    assert server.answered == 2


# -- the normal path in real Blender -----------------------------------------------------------------


@pytest.mark.blender
def test_bpy_commands_run_on_the_main_thread(serve):
    import bpy

    server = serve()
    threads = set()

    async def session():
        client = await Client.connect(server)
        answers = [
            await client.send(request)
            for request in (
                {"command": "create_object", "params": {"name": "mt_bridge", "location": [1, 2, 3]}},
                {"command": "list_objects"},
            )
        ]
        threads.update(support.threads())
        answers.append(tuple(bpy.data.objects["mt_bridge"].location))
        answers.append(await client.send({"command": "delete_object", "params": {"name": "mt_bridge"}}))
        answers.append(await client.send({"command": "delete_object", "params": {"name": "mt_bridge"}}))
        await client.close()
        return answers

    created, listed, location, deleted, missing = _run(session())
    assert created == {"ok": True, "result": {"name": "mt_bridge"}}
    assert "mt_bridge" in listed["result"]["objects"] and location == (1.0, 2.0, 3.0)
    assert deleted == {"ok": True, "result": {"deleted": "mt_bridge"}}
    assert missing == {"ok": False, "error": "no object named 'mt_bridge'"}
    assert "mt_bridge" not in bpy.data.objects
    assert threads == {threading.main_thread()}


@pytest.mark.blender
def test_headless_server_runs_until_sigterm(tmp_path, private_dir):
    """The example as a user runs it: run_forever in a headless Blender; a client in another process.

    On Windows another process cannot send SIGTERM (``send_signal`` ends the process outright): the
    server stops at ``--seconds`` there, through run_forever's ``until``."""
    client_module = _load("command_client")
    connection_file = private_dir / "server.json"
    command = [*support.python_command(EXAMPLES / "command_server.py"), "--", "--connection-file", str(connection_file)]
    if support.WINDOWS:
        command += ["--seconds", "30"]
    env = dict(os.environ, PYTHONPATH=str(support.ROOT), PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not connection_file.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the server wrote no connection file within 60 s"
            time.sleep(0.05)
        with client_module.CommandClient(connection_file) as client:
            assert client.call("create_object", name="remote", location=[0, 0, 1]) == {"name": "remote"}
            assert "remote" in client.call("list_objects")["objects"]
            with pytest.raises(client_module.CommandFailed, match="3 finite numbers"):
                client.call("create_object", name="bad", location="up")
        with client_module.CommandClient(connection_file) as intruder:
            with pytest.raises(client_module.CommandFailed, match="wrong token"):
                intruder.send({"command": "list_objects"})
        if not support.WINDOWS:
            proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            support.kill_group(proc)
            proc.communicate()
    assert proc.returncode == 0, out
    assert "command server stopped: 3 requests answered, 1 connections refused or cut off" in out, out
    assert "connection file removed: True" in out and not connection_file.exists(), out
    for noise in ("Traceback", "was destroyed but it is pending", "Event loop is closed"):
        assert noise not in out, out
