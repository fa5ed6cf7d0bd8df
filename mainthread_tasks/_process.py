"""``run_in_process``: CPU-heavy work in worker processes, read back by the main thread (no bpy, no thread).

Blender's page on threads recommends processes for work that runs alongside Blender, but
``multiprocessing`` and ``ProcessPoolExecutor`` do not fit inside it: the executor runs a management
thread, ``spawn`` re-runs Blender's ``--python`` script in the child, ``sys.executable`` names the
wrong program in some builds, and in Debian's Blender 3.4.1 merely importing ``multiprocessing`` in a
``--python`` script makes Blender crash at exit. So this pool is built on ``subprocess``, ``os.pipe``
and ``pickle`` alone:

- Each worker process runs ``_process_child.py`` (by path: never the parent's ``__main__``) with an
  interpreter of Blender's Python version (``_interpreter``). Tasks go down one pipe and results
  come back up another, as length-prefixed pickles (the format is in ``_process_child``); the
  child's stdout and stderr stay Blender's, for prints.
- One task is in flight per child; tasks wait in ``_Pool._pending`` for a free child. Children
  start lazily, one per task in flight, up to ``set_process_workers`` (default: one less than the
  CPU count, at least one), and stay until the pool stops (or it shrinks).
- A child's death fails only its task (ProcessDied). The main thread sees it as end-of-file on the
  result pipe and, should a process the task started hold that pipe open, by watching the process
  itself (``_process_exit_fd``: a pidfd, else ``Popen.poll`` while a task runs). The child keeps its
  pipes out of what its tasks start (``_process_child._keep_pipes_to_ourselves``). A reply that is
  not a well-formed reply to the task in flight (a stray write into the pipe, sizes over the limits)
  fails that task the same way and the child is replaced: no result reaches another task's Future.
- The pool is a *source* of the scheduler (``_wake.Source``): the main thread reads the
  children's result pipes without blocking wherever it runs queued tasks (``_dispatch`` says
  where), and completes the futures there, so done-callbacks run on the main thread. No thread is started.
- Every file descriptor is touched by the main thread only: it starts children, writes tasks, reads
  results, and stops them. Another thread that submits appends to ``_pending`` (under the pool's
  lock) and wakes the main thread, which dispatches the task at its next poll. A task is written
  only to an idle child, which is reading, so the write never waits for a busy child.
- The pool stops at the last ``unregister()`` and at interpreter exit (``stop``): children are
  terminated (killed if they do not end within half a second) and waited for, and the futures of
  unfinished tasks fail with SchedulerStopped. The next use after ``register()`` starts a new pool.

The same pipes on every system (issue 21): what differs is how a child gets its ends and how
the main thread asks a pipe for data without blocking -- non-blocking reads on POSIX, and on Windows,
where a pipe cannot be made non-blocking nor polled, ``PeekNamedPipe`` (as ``multiprocessing``'s
``Connection.poll`` does) before each read; both are in "the pipes" below. Windows passes the
children their pipes as handles in a handle list (``_spawn``), and the main thread sleeps there in
slices of 10 ms (``_wake``), asking the pipes after each. Pipes, not loopback sockets that
select() could wait on: results are unpickled here, and a loopback port is open to every local
program (see docs/processes.md). Workers end with Blender even when it dies in the middle of their
task: a Job Object on Windows (``_windows``), PR_SET_PDEATHSIG on Linux
(``_process_child._end_with_parent``).
"""

from __future__ import annotations

import enum
import io
import numbers
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import types
from collections import deque
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from time import monotonic, perf_counter
from typing import IO, Any, Literal, ParamSpec, TypeVar, cast

from . import _errors, _process_child
from ._args import not_callable, task_name
from ._errors import SchedulerStopped
from ._future import MainThreadFuture
from ._lifecycle import LIFECYCLE
from ._threadinfo import is_main_thread
from ._wake import add_source, remove_source, wake_main

__all__ = ("ProcessFuture", "run_in_process", "set_process_workers")

#: The largest pickled arguments or result a task may have, in bytes. Larger data belongs in a
#: file: the main thread reads every result, and a gigabyte takes it a while.
max_message_bytes = 1 << 30
#: The largest pool ``set_process_workers`` accepts.
MAX_WORKERS = 256
#: How long ``stop`` lets children end after SIGTERM (or end-of-file, when idle) before SIGKILL.
STOP_GRACE = 0.5
#: How long the version check of a candidate interpreter may take.
PROBE_TIMEOUT = 10.0
#: How often the main thread asks whether a busy worker process has ended, where the system gives
#: no file descriptor to watch for that (see ``_process_exit_fd``).
EXIT_CHECK_INTERVAL = 0.1

_CHILD_SCRIPT = os.path.abspath(_process_child.__file__)
_PIPE_SIZE = 1 << 20  # Linux lets a pipe hold 1 MiB (default 64 KiB), Windows any size (4 KiB): fewer reads
_WINDOWS = sys.platform == "win32"

_workers: int | None = None  # set_process_workers(); None: the default

_pool: _Pool | None = None
_pool_lock = threading.Lock()  # must be held while replacing _pool

_counts_lock = threading.Lock()  # must be held while changing the counters below
_submitted = _completed = _failed = _cancelled = 0

_task_numbers = 0  # the number of the last task sent to a child (main thread only)


_P = ParamSpec("_P")
_T = TypeVar("_T")


class ProcessFuture(MainThreadFuture[_T]):
    """The ``concurrent.futures.Future`` returned by ``run_in_process``.

    Any thread may wait on it, cancel it (until a worker process starts the task) or add
    callbacks. It is completed on the main thread, so done-callbacks run there (those added after
    it is done run at once in the adding thread, and a cancel() runs them in the cancelling
    thread). ``result()``/``exception()`` on the main thread read results and run queued tasks
    while they wait; in a worker thread they just wait, so something must keep the main thread
    running its work: the UI timer, or ``pump()`` and what calls it in the background.
    """

    _runs_on_main = False  # RUNNING means "in a worker process": the main thread may wait for it


# -- the interpreter of the children ------------------------------------------------------------

_python: str | None = None
_python_error: str | None = None
_python_lock = threading.Lock()  # must be held while looking for the interpreter

_PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.prefix)"


def _candidates() -> list[str]:
    version = "{}.{}".format(*sys.version_info[:2])
    names = ("python.exe",) if _WINDOWS else (f"python{version}", "python3")
    found = [sys.executable, getattr(sys, "_base_executable", None)]
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
        if _WINDOWS:  # python.org's layout, then Blender's (<version>\python\bin\python.exe)
            found.append(os.path.join(prefix, "python.exe"))
        found.extend(os.path.join(prefix, "bin", name) for name in names)
    found.extend(shutil.which(name) for name in names)
    return list(dict.fromkeys(path for path in found if path))


def _probe(path: str) -> tuple[str, str] | str:
    """``(major.minor, sys.prefix)`` of the interpreter at ``path``, or why it cannot serve."""
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return "not an executable file"
    if os.path.basename(os.path.realpath(path)).lower().startswith("blender"):
        return "Blender itself, not a Python interpreter"
    try:
        proc = subprocess.run(
            [path, "-I", "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROBE_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not run: {exc}"
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) != 2:
        return f"exited with status {proc.returncode}: {proc.stderr.strip()[-200:]!r}"
    return lines[0], lines[1]


def _find_interpreter() -> tuple[str | None, str]:
    """The interpreter for the children, or None and what was tried.

    It must run Blender's Python version (major.minor: pickles and compiled modules must match);
    one with Blender's own ``sys.prefix`` is preferred (the same standard library), else the first
    of the right version. Candidates: ``sys.executable``, ``sys._base_executable``, ``pythonX.Y``
    and ``python3`` in ``<prefix>/bin`` and on ``PATH`` (Windows: ``python.exe`` in ``<prefix>``,
    ``<prefix>\bin`` and on ``PATH``). Blender's official builds for Windows and macOS set
    ``sys.executable`` to the Python they bundle.
    """
    version = "{}.{}".format(*sys.version_info[:2])
    prefix = os.path.realpath(sys.prefix)
    fallback = None
    tried = []
    for path in _candidates():
        outcome = _probe(path)
        if isinstance(outcome, str):
            tried.append(f"{path}: {outcome}")
            continue
        found_version, found_prefix = outcome
        if found_version != version:
            tried.append(f"{path}: Python {found_version}")
            continue
        if os.path.realpath(found_prefix) == prefix:
            return path, ""
        tried.append(f"{path}: Python {found_version} of another installation ({found_prefix})")
        fallback = fallback or path
    return fallback, "; ".join(tried)


def _interpreter() -> str:
    """The path of the children's interpreter, found once. Any thread.

    Raises:
        RuntimeError: no interpreter of Blender's Python version was found (says what was tried).
    """
    global _python, _python_error
    if _python is None:
        with _python_lock:
            if _python is None and _python_error is None:
                path, tried = _find_interpreter()
                if path is None:
                    _python_error = (
                        f"run_in_process needs a Python {sys.version_info[0]}.{sys.version_info[1]} interpreter "
                        f"(Blender runs Python {sys.version.split()[0]}) for its worker processes and found none; "
                        f"tried: {tried or 'nothing'}. Install python{sys.version_info[0]}.{sys.version_info[1]} "
                        "or put it on PATH"
                    )
                else:
                    _python = path
    if _python is None:
        raise RuntimeError(_python_error)
    return _python


# -- pickling at submit ---------------------------------------------------------------------------


class _CallPickler(pickle.Pickler):
    """Pickles a call and notes the module of every function and class it refers to by name."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file, _process_child.PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj: object) -> Any:
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
        return NotImplemented


def _pickle_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bytes, dict[str, list[str]]]:
    """``(body, packages)`` for a task; raises TypeError/ValueError for what cannot be sent."""
    buffer = io.BytesIO()
    pickler = _CallPickler(buffer)
    try:
        pickler.dump((fn, args, kwargs))
    except Exception as exc:
        try:
            pickle.dumps(fn, _process_child.PROTOCOL)
            what = "one of its arguments"
        except Exception:  # noqa: BLE001 - a __reduce__ may raise anything: the fn is the culprit then
            what = "the function itself"
        raise TypeError(
            f"run_in_process({task_name(fn)}, ...): {what} cannot be pickled, so it cannot be sent "
            f"to a worker process: {exc}. Use a function defined at the top level of a module (not a lambda, "
            "a nested function or a bound method of an unpicklable object) and plain data"
        ) from exc
    if "__main__" in pickler.modules:
        raise TypeError(
            f"run_in_process({task_name(fn)}, ...): it needs something defined in __main__ (the "
            "script Blender runs), which a worker process cannot import; move the function (and any class it "
            "is given) into a module of its own and import it from there"
        )
    blender = sorted(m for m in pickler.modules if m.partition(".")[0] in _process_child.BLENDER_MODULES)
    if blender:
        raise TypeError(
            f"run_in_process({task_name(fn)}, ...): it needs Blender's module(s) {', '.join(blender)}, "
            "which a worker process does not have (it runs plain Python); pass plain data and do the bpy work "
            "on the main thread with the result"
        )
    body = buffer.getvalue()
    if len(body) > max_message_bytes:
        raise ValueError(
            f"run_in_process({task_name(fn)}, ...): the arguments pickle to {len(body):,} bytes, more "
            f"than {max_message_bytes:,}; pass a file path and read the data in the worker"
        )
    # The packages above every module the call needs, with their __path__ (empty for a module
    # without one, like Blender's bl_ext), for the worker's stand-ins (_process_child.import_module).
    packages: dict[str, list[str]] = {}
    for module in pickler.modules:
        parts = module.split(".")
        for i in range(1, len(parts)):
            name = ".".join(parts[:i])
            found = sys.modules.get(name)
            if found is not None and name not in packages:
                packages[name] = list(getattr(found, "__path__", None) or ())
    return body, packages


# -- the pool -----------------------------------------------------------------------------------


class _Task:
    __slots__ = ("future", "body", "packages", "name", "started", "sent_once")

    def __init__(self, future: ProcessFuture[Any], body: bytes, packages: dict[str, list[str]], name: str) -> None:
        self.future = future
        self.body: bytes | None = body  # None once a child has it
        self.packages = packages
        self.name = name
        self.started = False  # its future is RUNNING
        self.sent_once = False  # a child died before it could read the task once already


class _Child:
    """One worker process and the parent's ends of its pipes. Main thread only."""

    __slots__ = (
        "proc",
        "task_fd",
        "result_fd",
        "exit_fd",
        "task",
        "number",
        "quiet",
        "sys_path",
        "prefix",
        "buffer",
        "got",
    )

    def __init__(self, proc: subprocess.Popen[bytes], task_fd: int, result_fd: int, exit_fd: int | None) -> None:
        self.proc = proc
        self.task_fd = task_fd
        self.result_fd = result_fd
        self.exit_fd = exit_fd  # readable once the process has ended, if the system has such a thing
        self.task: _Task | None = None  # the _Task in flight
        self.number = 0  # the number of the task in flight: its reply must repeat it
        self.quiet = 0  # polls since the task went out that read nothing from it
        self.sys_path: list[str] | None = None  # the sys.path it was sent last
        self.prefix = bytearray()  # the start of the message being read, until its prefix is complete
        self.buffer: bytearray | None = None  # then the whole message
        self.got = 0


def _default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def workers() -> int:
    """How many worker processes the pool may run: ``set_process_workers`` or the default."""
    return _workers if _workers is not None else _default_workers()


def _process_exit_fd(proc: subprocess.Popen[bytes]) -> int | None:
    """A file descriptor that turns readable when ``proc`` ends, or None where there is none.

    How the main thread learns that a busy worker ended even when its result pipe stays open (a
    process the task started holds it): it sleeps in poll(2) on this fd too. Linux >= 5.3 has
    pidfds. Elsewhere (None) the pool asks ``proc.poll()`` every ``EXIT_CHECK_INTERVAL`` while a task
    runs. The one place that knows how a process is watched: another system's variant slots in here.
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


def _exit_description(code: int | None) -> str:
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


# -- the pipes: the one place that knows how each system makes them, hands them over and reads them

if sys.platform == "win32":
    import _winapi
    import msvcrt

    from . import _windows

    def _make_pipe() -> tuple[int, int]:
        """A new pipe ``(read fd, write fd)``, not inheritable."""
        read_handle, write_handle = _winapi.CreatePipe(None, _PIPE_SIZE)
        return (
            msvcrt.open_osfhandle(read_handle, os.O_RDONLY | os.O_BINARY),
            msvcrt.open_osfhandle(write_handle, os.O_WRONLY | os.O_BINARY),
        )

    def _spawn(command: list[str], task_read: int, result_write: int) -> subprocess.Popen[bytes]:
        """Start ``command`` + the child's pipes as handles in a handle list + our pid; add it to the job."""
        handles = [msvcrt.get_osfhandle(fd) for fd in (task_read, result_write)]
        for handle in handles:
            # Inheritable for this CreateProcess, whose handle list lets this child alone inherit them
            # (closed in the parent right after). A process that another thread starts meanwhile with
            # every inheritable handle (os.system) could get them too: the pool watches its workers'
            # processes themselves for that case (see _Pool.poll).
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

    def _read(fd: int, size: int) -> bytes:
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

    def _read_into(fd: int, view: memoryview) -> int:
        """Like ``os.readv(fd, [view])`` on a non-blocking pipe (``_read``)."""
        data = _read(fd, len(view))
        view[: len(data)] = data
        return len(data)

else:

    def _make_pipe() -> tuple[int, int]:
        """A new pipe ``(read fd, write fd)``, not inheritable, of _PIPE_SIZE bytes where Linux allows."""
        read_fd, write_fd = os.pipe()
        if sys.platform == "linux":
            import fcntl

            try:
                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:  # over the system's limit (/proc/sys/fs/pipe-max-size)
                pass
        return read_fd, write_fd

    def _spawn(command: list[str], task_read: int, result_write: int) -> subprocess.Popen[bytes]:
        """Start ``command`` + the child's pipes as file descriptors + our pid."""
        return subprocess.Popen(
            [*command, str(task_read), str(result_write), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            pass_fds=(task_read, result_write),
        )

    _read = os.read  # the result pipe is non-blocking (_start_child): BlockingIOError when empty

    def _read_into(fd: int, view: memoryview) -> int:
        return os.readv(fd, [view])


class _Pool:
    """The worker processes and their tasks; a source (see ``_wake.Source``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # must be held while touching _pending or _closed
        self._pending: deque[_Task] = deque()  # any thread appends; the main thread takes
        self._closed: str | None = None  # SchedulerStopped's message, once stopped
        # Main thread only:
        self._children: list[_Child] = []  # alive
        self._idle: list[_Child] = []
        self._busy: list[_Child] = []  # with a task in flight
        self._ending: list[subprocess.Popen[bytes]] = []  # retired children not yet waited for

    # -- any thread ---------------------------------------------------------------------------

    def submit(self, task: _Task) -> None:
        """Queue ``task``; dispatch it now if called on the main thread. Raises SchedulerStopped."""
        global _submitted
        with self._lock:
            if self._closed is not None:
                raise SchedulerStopped(self._closed)
            self._pending.append(task)
            with _counts_lock:
                _submitted += 1
        if is_main_thread():
            self._dispatch()
        else:
            wake_main()

    def counts(self) -> tuple[int, int, int]:
        """``(processes alive, tasks pending, tasks running)``. Any thread (a snapshot)."""
        return len(self._children), len(self._pending), len(self._busy)

    # -- the source interface: main thread -------------------------------------------------------

    def fds(self) -> list[int]:
        fds = []
        for child in self._busy:
            fds.append(child.result_fd)
            if child.exit_fd is not None:
                fds.append(child.exit_fd)
        return fds

    def busy(self) -> bool:
        return bool(self._busy or self._pending)

    def due(self) -> float | None:
        if self._pending and (self._idle or len(self._children) < workers()):
            return 0.0  # submitted from another thread: the main thread dispatches it
        if self._ending or (self._idle and len(self._children) > workers()):
            return 0.01  # children to retire or wait for
        for child in self._busy:
            if child.exit_fd is None:
                return EXIT_CHECK_INTERVAL  # no fd tells when it ends: ask (see _process_exit_fd)
        return None

    def poll(self, deadline: float | None = None) -> int:
        """Read what the children sent; finish those futures; dispatch waiting tasks. Main thread."""
        if not (self._busy or self._pending or self._ending or len(self._children) > workers()):
            return 0
        done = 0
        for child in list(self._busy):
            if self._closed is not None or (deadline is not None and perf_counter() > deadline):
                break
            if child.task is None:  # finished by a nested poll (a done-callback waited on a future)
                continue
            if self._collect(child, deadline):
                done += 1
                continue
            # Nothing came. The process may have ended with its result pipe still open (something it
            # started holds it): no end-of-file then, so ask. Not on the first quiet poll after the
            # task went out, the usual wait for a reply (it saves a system call per task): its exit
            # fd wakes the main thread for another poll at once (where it has none, due() does).
            child.quiet += 1
            if child.quiet > 1 and child.proc.poll() is not None:
                self._collect(child, None, ended=True)
                done += 1
        if self._closed is None:
            self._dispatch()
        return done

    def stop(self, message: str) -> None:
        """Stop for good: end every child, fail unfinished futures with SchedulerStopped(message).

        Called by the scheduler at the last unregister() and at exit. Returns within about a second
        (``2 * STOP_GRACE``): children that ignore SIGTERM are killed.
        """
        global _failed, _cancelled
        with self._lock:
            if self._closed is not None:
                return
            self._closed = message
            pending = list(self._pending)
            self._pending.clear()
        children, self._children, self._idle, self._busy = self._children, [], [], []
        running = [child.task for child in children if child.task is not None]
        for child in children:
            os.close(child.task_fd)  # an idle child ends at end-of-file
            child.task_fd = -1
            if child.task is not None and child.proc.poll() is None:
                child.proc.terminate()
            child.task = None
        _end_processes([*(child.proc for child in children), *self._ending], STOP_GRACE)
        self._ending = []
        for child in children:
            _close_pipes(child)
        stopped_running = stopped_pending = 0
        for task in running + pending:
            if task.started:
                stopped_running += 1
            else:
                stopped_pending += 1  # (or cancelled while it waited: counted now)
            if task.future.cancelled():
                continue
            try:
                task.future.set_exception(SchedulerStopped(message))
            except InvalidStateError:
                pass
        with _counts_lock:
            _failed += stopped_running
            _cancelled += stopped_pending

    # -- main thread: children ------------------------------------------------------------------

    def _start_child(self) -> _Child:
        python = _interpreter()
        task_read, task_write = _make_pipe()
        result_read, result_write = _make_pipe()
        try:
            proc = _spawn([python, "-I", _CHILD_SCRIPT], task_read, result_write)
        except BaseException:
            for fd in (task_write, result_read):
                os.close(fd)
            raise
        finally:
            os.close(task_read)
            os.close(result_write)
        if sys.platform != "win32":  # (Windows cannot; _read asks the pipe first)
            os.set_blocking(result_read, False)
        child = _Child(proc, task_write, result_read, _process_exit_fd(proc))
        self._children.append(child)
        return child

    def _next_task(self) -> _Task | None:
        """The oldest pending task that was not cancelled, now RUNNING; None if there is none."""
        while True:
            with self._lock:
                if not self._pending:
                    return None
                task = self._pending.popleft()
            if task.started or task.future.set_running_or_notify_cancel():
                task.started = True
                return task
            _count_cancelled(1)

    def _dispatch(self) -> None:
        """Give waiting tasks to idle children, starting children up to the pool's size.

        Idle children beyond the size (``set_process_workers`` shrank it) end first: they take no
        waiting task.
        """
        self._end_retired()
        while self._pending and self._closed is None:
            child = self._usable_idle_child()
            if child is None and len(self._children) >= workers():
                return
            task = self._next_task()
            if task is None:
                if child is not None:
                    self._idle.append(child)
                return
            try:
                child = child or self._start_child()
            except Exception as exc:  # noqa: BLE001 - e.g. too many open files
                self._fail(
                    task, _errors.process_died()(f"could not start a worker process for {task.name}: {exc}"), exc
                )
                continue
            self._send(child, task)

    def _usable_idle_child(self) -> _Child | None:
        """The most recently used idle child (warm caches) whose process runs; None if there is none.

        One that ended while idle is dropped here: if something its last task started still holds
        its task pipe, a task written there would wait unread (without, the write fails and the
        task goes to another child, see _send).
        """
        while self._idle:
            child = self._idle.pop()
            if child.proc.poll() is None:
                return child
            self._remove(child, ended=True)
        return None

    def _send(self, child: _Child, task: _Task) -> None:
        global _task_numbers
        sys_path = list(sys.path)
        _task_numbers += 1
        header = pickle.dumps(
            (_task_numbers, None if sys_path == child.sys_path else sys_path, task.packages, max_message_bytes),
            _process_child.PROTOCOL,
        )
        child.task, child.number, child.quiet = task, _task_numbers, 0
        self._busy.append(child)
        try:
            _process_child.write_message(child.task_fd, header, task.body)  # type: ignore[arg-type]  # not sent yet: has its body
        except OSError:
            # The child is gone (it died while idle, or while reading this task): the task never
            # started there. Try once more in another child; a second loss fails it.
            child.task = None
            self._busy.remove(child)
            self._remove(child, ended=True)
            if task.sent_once:
                self._fail(
                    task,
                    _errors.process_died()(
                        f"worker processes died twice before they could read {task.name}; see their output above"
                    ),
                )
            else:
                task.sent_once = True
                with self._lock:
                    self._pending.appendleft(task)
            return
        child.sys_path = sys_path
        task.body = None  # the child has it

    def _remove(self, child: _Child, ended: bool) -> None:
        """Forget ``child`` and close its pipes; ``ended``: it is known to be ending (wait for it)."""
        self._children.remove(child)
        if child in self._idle:
            self._idle.remove(child)
        _close_pipes(child)
        if ended:
            _end_processes([child.proc], 0.2)
        else:
            self._ending.append(child.proc)

    def _end_retired(self) -> None:
        # Shrunk by set_process_workers: idle children beyond the size end (busy ones finish first).
        # Oldest first: the most recently used stay.
        while self._idle and len(self._children) > workers():
            self._remove(self._idle.pop(0), ended=False)  # end-of-file on its task pipe: it exits
        if self._ending:
            self._ending = [proc for proc in self._ending if proc.poll() is None]

    # -- main thread: results -------------------------------------------------------------------

    def _collect(self, child: _Child, deadline: float | None, ended: bool = False) -> bool:
        """Read from busy ``child``; finish its task if its reply is complete or it is lost.

        Returns True if the task is finished. ``ended``: the process is known to have ended, so
        what it wrote is all there is.
        """
        try:
            message = self._receive(child, deadline)
        except _process_child.BadMessage as exc:
            self._lose(child, str(exc))
            return True
        if message is None:
            if not ended:
                return False
            message = _DIED
        if message is _DIED:
            self._lose(child)
        else:
            self._finish(child, message)
        return True

    def _receive(self, child: _Child, deadline: float | None) -> bytearray | Literal[_Died.DIED] | None:
        """The child's reply once complete, _DIED at end-of-file, else None.

        Raises:
            _process_child.BadMessage: what the child sent is no reply (see ``_process_child``).
        """
        fd = child.result_fd
        while True:
            try:
                if child.buffer is None:
                    chunk = _read(fd, _PIPE_SIZE)
                    if not chunk:
                        return _DIED
                    child.prefix += chunk
                    if len(child.prefix) < _process_child.PREFIX.size:
                        continue
                    header_size, body_size = _process_child.unpack_prefix(child.prefix, max_message_bytes)
                    total = _process_child.PREFIX.size + header_size + body_size
                    if len(child.prefix) > total:  # a child writes nothing but its one reply
                        raise _process_child.BadMessage(f"{len(child.prefix) - total:,} bytes more than its reply")
                    if len(child.prefix) == total:  # all in one read: the usual case
                        message, child.prefix = child.prefix, bytearray()
                        return message
                    child.buffer = bytearray(total)
                    child.buffer[: len(child.prefix)] = child.prefix
                    child.got, child.prefix = len(child.prefix), bytearray()
                else:
                    count = _read_into(fd, memoryview(child.buffer)[child.got :])
                    if not count:
                        return _DIED
                    child.got += count
                    if child.got == len(child.buffer):
                        message, child.buffer = child.buffer, None
                        return message
            except BlockingIOError:
                return None
            if deadline is not None and perf_counter() > deadline:
                return None

    def _finish(self, child: _Child, message: bytearray) -> None:
        task = child.task
        assert task is not None, "only a busy child has a reply"
        view = memoryview(message)
        try:
            size = _process_child.PREFIX.size
            _, header_size, _ = _process_child.PREFIX.unpack_from(view)  # (_receive checked it)
            try:
                number, failure = _process_child.parse_reply_header(view[size : size + header_size])
            except _process_child.BadMessage as exc:
                self._lose(child, str(exc))
                return
            if number != child.number:
                self._lose(child, f"the reply of task {number}, not of task {child.number}")
                return
            # A whole, well-formed reply to this very task: the child is idle again.
            child.task = None
            self._busy.remove(child)
            self._idle.append(child)
            body = view[size + header_size :]
            if failure is None:
                # Unpickling runs the result's own code. Whatever it raises fails the task, SystemExit
                # and KeyboardInterrupt too: they come from that code, not from the user (the
                # scheduler holds Ctrl-C back while it polls), and re-raised by future.result() they
                # would end a --background script or unwind Blender's timer. So they are wrapped in
                # the same TypeError as any other result that cannot be unpickled (as __cause__).
                try:
                    result = pickle.loads(body)
                except BaseException as exc:  # noqa: BLE001 - see above
                    unpicklable = TypeError(
                        f"the result of {task.name} came back from the worker process but cannot "
                        f"be unpickled here: {exc!r}"
                    )
                    self._fail(task, unpicklable, exc)
                    return
                self._succeed(task, result)
                return
            type_name, text, tb = failure
            error: object
            try:
                error = pickle.loads(body) if len(body) else None
            except BaseException:  # noqa: BLE001 - e.g. its class is not importable here (see above, too)
                error = None
            if not isinstance(error, BaseException):
                error = RuntimeError(f"{type_name}: {text} (the exception itself could not be sent back)")
            self._fail(task, error, _RemoteTraceback(tb))
        finally:
            view.release()

    def _succeed(self, task: _Task, result: object) -> None:
        global _completed
        with _counts_lock:
            _completed += 1
        try:
            task.future.set_result(result)
        except InvalidStateError:  # somebody completed it by hand
            pass

    def _fail(self, task: _Task, error: BaseException, cause: BaseException | None = None) -> None:
        global _failed
        if cause is not None:
            error.__cause__ = cause
        with _counts_lock:
            _failed += 1
        try:
            task.future.set_exception(error)
        except InvalidStateError:
            pass

    def _lose(self, child: _Child, broken: str | None = None) -> None:
        """``child`` died (``broken`` is None) or sent what is no reply to its task (``broken`` says
        what): end the process, forget it, fail its task with ProcessDied."""
        task, child.task = child.task, None
        assert task is not None, "only a busy child is watched"
        self._busy.remove(child)
        if broken is not None:
            child.proc.kill()
        self._remove(child, ended=True)
        if broken is None:
            how = f"died: {_exit_description(child.proc.returncode)}"
        else:
            how = f"sent a reply that cannot be read ({broken}), so it was ended"
        self._fail(
            task,
            _errors.process_died()(
                f"the worker process (pid {child.proc.pid}) running {task.name} {how}. Only this task is lost; "
                "a new worker process takes the next task"
            ),
        )


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (set as its ``__cause__``)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f"\n\nThe worker process raised:\n\n{self.tb}"


class _Died(enum.Enum):
    """What ``_Pool._receive`` returns at end-of-file: an enum member, which the checker tells apart
    from a reply (``message is _DIED`` narrows)."""

    DIED = 0


_DIED = _Died.DIED


def _close_pipes(child: _Child) -> None:
    for fd in (child.task_fd, child.result_fd, child.exit_fd):
        if fd is not None and fd >= 0:
            os.close(fd)
    child.task_fd = child.result_fd = -1
    child.exit_fd = None


def _count_cancelled(n: int) -> None:
    global _cancelled
    with _counts_lock:
        _cancelled += n


def _end_processes(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
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


# -- the public functions and the pool's lifecycle ----------------------------------------------


def _current_pool() -> _Pool:
    """The running pool, started (and added to the scheduler's sources) on first use. Any thread."""
    global _pool
    pool = _pool
    if pool is not None and pool._closed is None:
        return pool
    with _pool_lock:
        if _pool is None or _pool._closed is not None:
            _pool = _Pool()
            add_source(_pool)
        return _pool


def run_in_process(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> ProcessFuture[_T]:
    """Run ``fn(*args, **kwargs)`` in a worker process; return its Future at once. Any thread.

    For CPU-heavy pure-Python work: a worker process uses another core, with no thread in Blender.
    ``fn``, its arguments and its result travel as pickles, so ``fn`` must be defined at the top
    level of a module that the worker can import -- not in ``__main__`` (Blender's ``--python``
    script), not a lambda -- and must not need ``bpy`` (the worker runs plain Python, with
    Blender's ``sys.path``). A function in an add-on's own module works even though the add-on's
    ``__init__`` imports bpy: the worker imports only that module. Do the ``bpy`` work with the
    result on the main thread, e.g. in a done-callback (they run on the main thread).

    The main thread reads the results wherever it runs queued tasks: in the UI the add-on's timer
    does, in ``--background`` and the bpy module ``pump()`` and what calls it. Tasks wait for a free
    worker process; the pool starts with the first task and holds ``set_process_workers()``
    processes (default: CPU count - 1, at least 1). The Future re-raises ``fn``'s exception with the
    same type, the worker's traceback attached as its ``__cause__``. ``cancel()`` works until a
    worker process starts the task.

    Raises:
        TypeError: ``fn`` is not callable; ``fn`` or an argument cannot be pickled or needs
            ``__main__`` or a Blender module.
        ValueError: the pickled arguments are larger than 1 GiB.
        RuntimeError: no Python interpreter of Blender's version was found for the workers (the
            message says which were tried).
        SchedulerStopped: after the last ``unregister()``, or while Python exits.

    The Future fails with:
        the exception ``fn`` raised (or a TypeError/ValueError when the result cannot be pickled
        there or unpickled here, or is larger than 1 GiB: the worker survives); ``ProcessDied``
        when the worker process died while running it, even if a process it started still runs,
        or sent back something that is not its reply (another one replaces it; other tasks go
        on); ``SchedulerStopped`` when the pool stopped first (last ``unregister()``, exit).
    """
    if not callable(fn):
        raise not_callable(fn)
    if LIFECYCLE.stopped is not None:
        raise SchedulerStopped(LIFECYCLE.stopped)
    body, packages = _pickle_call(fn, args, kwargs)
    _interpreter()  # a missing interpreter is the caller's error, now
    future: ProcessFuture[_T] = ProcessFuture()
    future.__dict__  # noqa: B018 - made by its creator, before anybody else sees it (_future.MADE_BY_ITS_CREATOR)
    pool = _current_pool()
    pool.submit(_Task(future, body, packages, task_name(fn)))
    stopped = LIFECYCLE.stopped
    if stopped is not None and pool._closed is None:
        # Stopped between the check above and the submit, after the scheduler stopped its sources:
        # nobody else will stop this pool.
        remove_source(pool)
        pool.stop(stopped)
    return future


def set_process_workers(n: int) -> int:
    """Set how many worker processes ``run_in_process`` may run at once; return the previous size.

    Any thread. Takes effect for the next task handed to a worker: a larger pool starts more
    processes as tasks wait; a smaller one lets busy processes finish their task, then ends them.
    The default is the CPU count - 1, at least 1.

    Raises:
        TypeError: ``n`` is not an int.
        ValueError: ``n`` is not within 1 .. 256.
    """
    global _workers
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_process_workers(): n must be an int, got {n!r}")
    if not 1 <= n <= MAX_WORKERS:
        raise ValueError(f"set_process_workers(): n must be within 1 .. {MAX_WORKERS}, got {n!r}")
    previous, _workers = workers(), int(n)
    pool = _pool
    if pool is not None and pool._closed is None:
        if is_main_thread():
            pool._dispatch()  # (no result is read here: no done-callback runs inside this call)
        else:
            wake_main()
    return previous


def counts() -> dict[str, int]:
    """The process fields of ``stats()``. Any thread."""
    pool = _pool
    alive, pending, running = (0, 0, 0) if pool is None or pool._closed is not None else pool.counts()
    return {
        "processes": alive,
        "process_submitted": _submitted,
        "process_completed": _completed,
        "process_failed": _failed,
        "process_cancelled": _cancelled,
        "process_pending": pending,
        "process_running": running,
    }


def reset_counts() -> None:
    """Zero the counters (the pool is untouched). Main thread."""
    global _submitted, _completed, _failed, _cancelled
    with _counts_lock:
        _submitted = _completed = _failed = _cancelled = 0


# stats() and reset_stats() reach the pool's counters through these (the scheduler imports no
# other module of the package).
