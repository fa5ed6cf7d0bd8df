"""The pipes between Blender and the processes it starts: the one place that knows how each system
makes them, hands them to a child and reads them without blocking (no bpy, no thread).

Every pool's processes -- ``run_in_process``'s workers and a cluster pool's broker -- talk to the
main thread over two pipes each, in the wire format of ``_wire``. What differs per system
is how a child gets its ends and how the main thread asks a pipe for data without blocking:
non-blocking reads on POSIX, and on Windows, where a pipe cannot be made non-blocking nor polled,
``PeekNamedPipe`` (as ``multiprocessing``'s ``Connection.poll`` does) before each read. Windows
passes the child its pipes as handles in a handle list (``spawn``) and puts it in Blender's Job
Object (``_windows``), and the main thread sleeps there in slices of 10 ms (``_wake``), asking the
pipes after each. Pipes, not loopback sockets that select() could wait on: results are unpickled
here, and a loopback port is open to every local program (see docs/processes.md).

Main thread only, like every file descriptor of the pools.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import subprocess
import sys
from time import monotonic, perf_counter
from typing import Literal, cast

from . import _wire

logger = logging.getLogger("mainthread_tasks")

__all__ = (
    "DIED",
    "PIPE_SIZE",
    "Reader",
    "end_processes",
    "exit_description",
    "make_pipe",
    "process_exit_fd",
    "read",
    "read_into",
    "spawn",
)

PIPE_SIZE = 1 << 20  # Linux lets a pipe hold 1 MiB (default 64 KiB), Windows any size (4 KiB): fewer reads
_WINDOWS = sys.platform == "win32"


class _Died(enum.Enum):
    """What ``Reader.receive`` returns at end-of-file: an enum member, which the checker tells apart
    from a message (``message is DIED`` narrows)."""

    DIED = 0


DIED = _Died.DIED


if sys.platform == "win32":
    import _winapi
    import msvcrt

    from . import _windows

    def make_pipe() -> tuple[int, int]:
        """A new pipe ``(read fd, write fd)``, not inheritable."""
        read_handle, write_handle = _winapi.CreatePipe(None, PIPE_SIZE)
        return (
            msvcrt.open_osfhandle(read_handle, os.O_RDONLY | os.O_BINARY),
            msvcrt.open_osfhandle(write_handle, os.O_WRONLY | os.O_BINARY),
        )

    def spawn(command: list[str], task_read: int, result_write: int) -> subprocess.Popen[bytes]:
        """Start ``command`` + the child's pipes as handles in a handle list + our pid; add it to the job."""
        handles = [msvcrt.get_osfhandle(fd) for fd in (task_read, result_write)]
        for handle in handles:
            # Inheritable for this CreateProcess, whose handle list lets this child alone inherit them
            # (closed in the parent right after). A process that another thread starts meanwhile with
            # every inheritable handle (os.system) could get them too: the pools watch their
            # processes themselves for that case.
            os.set_handle_inheritable(handle, True)
        proc = subprocess.Popen(
            [*command, *map(str, handles), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            close_fds=True,
            startupinfo=subprocess.STARTUPINFO(lpAttributeList={"handle_list": handles}),
            creationflags=0 if _windows.has_console() else subprocess.CREATE_NO_WINDOW,
        )
        _windows.add_to_job(proc)
        return proc

    def read(fd: int, size: int) -> bytes:
        """Up to ``size`` bytes the pipe holds now; b"" at end-of-file. Raises BlockingIOError if it
        holds nothing yet (a read would wait for the child)."""
        try:
            # Without a size to read: (bytes available, bytes left in the message).
            available, _ = cast("tuple[int, int]", _winapi.PeekNamedPipe(msvcrt.get_osfhandle(fd)))
        except BrokenPipeError:  # the writer is gone and everything it wrote was read
            return b""
        if not available:
            raise BlockingIOError
        return os.read(fd, min(size, available))

    def read_into(fd: int, view: memoryview) -> int:
        """Like ``os.readv(fd, [view])`` on a non-blocking pipe (``read``)."""
        data = read(fd, len(view))
        view[: len(data)] = data
        return len(data)

    def nonblocking(fd: int) -> None:
        """Nothing to do on Windows: ``read`` asks the pipe first."""

else:

    def make_pipe() -> tuple[int, int]:
        """A new pipe ``(read fd, write fd)``, not inheritable, of PIPE_SIZE bytes where Linux allows."""
        read_fd, write_fd = os.pipe()
        if sys.platform == "linux":
            import fcntl

            try:
                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:  # over the system's limit (/proc/sys/fs/pipe-max-size)
                pass
        return read_fd, write_fd

    def spawn(command: list[str], task_read: int, result_write: int) -> subprocess.Popen[bytes]:
        """Start ``command`` + the child's pipes as file descriptors + our pid."""
        return subprocess.Popen(
            [*command, str(task_read), str(result_write), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            pass_fds=(task_read, result_write),
        )

    read = os.read  # the result pipe is non-blocking (``nonblocking``): BlockingIOError when empty

    def read_into(fd: int, view: memoryview) -> int:
        return os.readv(fd, [view])

    def nonblocking(fd: int) -> None:
        """Make reads of ``fd`` raise BlockingIOError instead of waiting."""
        os.set_blocking(fd, False)


#: A process start that failed with an error that may not come again is tried once more. Windows
#: reports ERROR_INTERNAL_ERROR (1359) from CreateProcess when the new process dies while the system
#: loads it, before any code of ours runs there (seen once in a CI run under Wine, in 9 loops of the
#: same tests never again); a system short of processes or memory for a moment fails alike.
#: A missing or forbidden interpreter fails the same way every time: it is not tried again.
START_ATTEMPTS = 2
_FAILS_EVERY_TIME = (FileNotFoundError, PermissionError, NotADirectoryError)


def start(command: list[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start ``command`` with two new pipes: ``(process, task pipe's write fd, result pipe's read fd)``.

    The result pipe reads without blocking (``read``); the child's ends are closed here. A start
    that failed with an ``OSError`` that may be passing is tried again (``START_ATTEMPTS``).
    """
    attempt = 1
    while True:
        try:
            return _start(command)
        except _FAILS_EVERY_TIME:
            raise
        except OSError as exc:
            if attempt >= START_ATTEMPTS:
                raise
            attempt += 1
            logger.warning("mainthread_tasks: starting %s failed (%s); trying again", " ".join(command), exc)


def _start(command: list[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    task_read, task_write = make_pipe()
    result_read, result_write = make_pipe()
    try:
        proc = spawn(command, task_read, result_write)
    except BaseException:
        for fd in (task_write, result_read):
            os.close(fd)
        raise
    finally:
        os.close(task_read)
        os.close(result_write)
    nonblocking(result_read)
    return proc, task_write, result_read


class Reader:
    """Reads messages of the wire format from one pipe without blocking. Main thread only.

    ``leftover`` holds what came after the last complete message: the start of the next one (a
    broker streams many), or junk (a worker writes nothing but its one reply).
    """

    __slots__ = ("fd", "leftover", "_buffer", "_got")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.leftover = bytearray()  # read but not yet part of a message being filled
        self._buffer: bytearray | None = None  # the message being filled, once its size is known
        self._got = 0

    def receive(self, deadline: float | None, max_body: int) -> bytearray | Literal[_Died.DIED] | None:
        """The next complete message, DIED at end-of-file, or None while it is incomplete.

        Reads what the pipe holds until a message is complete, the pipe is empty, or
        ``time.perf_counter()`` is past ``deadline``.

        Raises:
            _wire.BadMessage: what the pipe holds is no message (see ``_wire``),
                or announces a body over ``max_body``.
        """
        fd = self.fd
        while True:
            if self._buffer is None:
                leftover = self.leftover
                if len(leftover) >= _wire.PREFIX.size:
                    header_size, body_size = _wire.unpack_prefix(leftover, max_body)
                    total = _wire.PREFIX.size + header_size + body_size
                    if len(leftover) == total:  # all in one read: the usual case
                        self.leftover = bytearray()
                        return leftover
                    if len(leftover) > total:
                        message = leftover[:total]
                        del leftover[:total]
                        return message
                    self._buffer = bytearray(total)
                    self._buffer[: len(leftover)] = leftover
                    self._got, self.leftover = len(leftover), bytearray()
                    continue
                try:
                    chunk = read(fd, PIPE_SIZE)
                except BlockingIOError:
                    return None
                if not chunk:
                    return DIED
                leftover += chunk
            else:
                try:
                    count = read_into(fd, memoryview(self._buffer)[self._got :])
                except BlockingIOError:
                    return None
                if not count:
                    return DIED
                self._got += count
                if self._got == len(self._buffer):
                    message, self._buffer = self._buffer, None
                    return message
            if deadline is not None and perf_counter() > deadline:
                return None


def process_exit_fd(proc: subprocess.Popen[bytes]) -> int | None:
    """A file descriptor that turns readable when ``proc`` ends, or None where there is none.

    How the main thread learns that a busy child ended even when its result pipe stays open (a
    process the task started holds it): it sleeps in poll(2) on this fd too. Linux >= 5.3 has
    pidfds. Elsewhere (None) the pools ask ``proc.poll()`` every so often while work is in flight.
    The one place that knows how a process is watched: another system's variant slots in here.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(proc.pid)
    except OSError:  # ENOSYS before Linux 5.3, or forbidden by a seccomp filter
        return None
    return fd


#: Windows' exit statuses of a crash (NTSTATUS codes), as ProcessDied names them.
_CRASHES = {0xC0000005: "an access violation", 0xC00000FD: "a stack overflow", 0xC0000409: "a fail-fast exception"}


def exit_description(code: int | None) -> str:
    """How a process ended, for ProcessDied's message: "killed by signal SIGKILL", ..."""
    if code is None:
        return "it closed its result pipe"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if _WINDOWS and code >= 0xC0000000:  # an NTSTATUS error: Windows ended it
        return f"it crashed with status 0x{code:08X} ({_CRASHES.get(code, 'an error')})"
    return f"it exited with status {code}"


def end_processes(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """Wait up to ``grace`` seconds for ``procs`` to end, then kill the rest and wait for them."""
    deadline = monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:  # pragma: no cover - not even SIGKILL ended it (D state)
            pass


def close_fds(*fds: int | None) -> None:
    """Close each of ``fds`` that is open (not None, not negative)."""
    for fd in fds:
        if fd is not None and fd >= 0:
            os.close(fd)
