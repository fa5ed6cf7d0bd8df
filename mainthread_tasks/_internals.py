"""Every private CPython and Blender internal the package touches, in one list (no bpy at import).

Each entry says what it is, where and why the package needs it, the public fallback (what the
package does, or would have to do, without it), and the versions it was checked with. Its
``check()`` returns None while the internal is there and behaves as the package expects, else what
changed: ``tests/test_internals.py`` runs every check in every tier, so a new Python or Blender
says so loudly, and it fails when the package's source names a private that is not listed here.

    python -m mainthread_tasks._internals      # check this interpreter (or: blender -b --python-expr)

Nothing imports this module at run time; it costs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ("INTERNALS", "Internal", "failures")

#: The versions every check below ran on, in CI.
CHECKED = (
    "CPython 3.11 (Blender 3.4.1 from Debian, the bpy 4.2/4.5/5.0 wheels, pyenv), 3.13 (pyenv), "
    "3.14 (Blender 5.2 from Debian sid); Windows: python.org's 3.11.9 (with the bpy 4.2 wheel) and "
    "3.13.2 under Wine"
)


@dataclass(frozen=True)
class Internal:
    name: str  #: the private name(s), as the source spells them
    used_in: str  #: module(s)
    why: str
    fallback: str  #: what the package does, or would have to do, without it
    check: Callable[[], str | None]  #: None when present and as expected, else what changed
    #: The spellings in the package's source that this entry covers (the completeness test).
    tokens: tuple[str, ...] = ()


def _future_layout() -> str | None:
    from concurrent.futures import Future, _base

    for name in ("PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED", "LOGGER"):
        if not hasattr(_base, name):
            return f"concurrent.futures._base.{name} is gone"
    future: Future[int] = Future()
    for name in ("_state", "_result", "_exception", "_condition", "_waiters", "_done_callbacks"):
        if not hasattr(future, name):
            return f"Future().{name} is gone"
    if future._state != _base.PENDING or not callable(getattr(future, "_invoke_callbacks", None)):
        return "Future's state or _invoke_callbacks changed"
    return None


def _register_atexit() -> str | None:
    import threading

    if not callable(getattr(threading, "_register_atexit", None)):
        return "threading._register_atexit is gone: nothing would release threads blocked on the main thread at exit"
    return None


def _executor_exit_hook() -> str | None:
    import concurrent.futures.thread as pool_module

    if not callable(getattr(pool_module, "_python_exit", None)):
        return "concurrent.futures.thread._python_exit is gone: check where it joins the executors' threads now"
    return None


def _task_call_opcode() -> str | None:
    from . import _dispatch, _interrupts

    if not _interrupts._task_lines.get(_dispatch.run_batch.__code__):
        return "no CALL_FUNCTION_EX in run_batch: the Ctrl-C guard cannot tell a task from the dispatcher"
    return None


def _getframe() -> str | None:
    return None if callable(getattr(sys, "_getframe", None)) else "sys._getframe is gone"


def _base_executable() -> str | None:
    if sys.platform == "win32" or sys.prefix == sys.base_prefix:
        return None  # only read in a venv, where it names the base interpreter (falls back anyway)
    return None if isinstance(getattr(sys, "_base_executable", None), str) else "sys._base_executable is gone"


def _thread_registry() -> str | None:
    import threading

    active = getattr(threading, "_active", None)
    if not isinstance(active, dict) or active.get(threading.get_ident()) is not threading.current_thread():
        return "threading._active no longer maps thread idents to Thread objects"
    if not isinstance(getattr(threading, "_DummyThread", None), type):
        return "threading._DummyThread is gone"
    return None


def _mp_main_alias() -> str | None:
    import inspect
    import multiprocessing

    # multiprocessing/__init__.py makes the alias when it is imported.
    if "__mp_main__" not in inspect.getsource(multiprocessing):
        return "importing multiprocessing no longer aliases __main__ as __mp_main__ (nothing to remove now)"
    return None


def _winapi_pipes() -> str | None:
    if sys.platform != "win32":
        return None  # used on Windows only
    import _winapi

    read_handle, write_handle = _winapi.CreatePipe(None, 1 << 16)
    try:
        if _winapi.PeekNamedPipe(read_handle)[0] != 0:
            return "_winapi.PeekNamedPipe on an empty pipe no longer says (0, 0)"
        _winapi.WriteFile(write_handle, b"abc")
        if _winapi.PeekNamedPipe(read_handle)[0] != 3:
            return "_winapi.PeekNamedPipe no longer gives the bytes available first"
    finally:
        _winapi.CloseHandle(write_handle)
    try:
        _winapi.PeekNamedPipe(read_handle)
        _winapi.ReadFile(read_handle, 3)
        _winapi.PeekNamedPipe(read_handle)
    except BrokenPipeError:
        return None
    finally:
        _winapi.CloseHandle(read_handle)
    return "_winapi.PeekNamedPipe no longer raises BrokenPipeError once the writer is gone and all is read"


def _blender_operators() -> str | None:
    bpy = sys.modules.get("bpy")
    version = getattr(getattr(bpy, "app", None), "version", None)
    if not isinstance(version, tuple):
        return None  # not Blender (fake-bpy-module's bpy.app is a stub): nothing to check
    names = getattr(bpy.ops, "__dict__", {})  # type: ignore[union-attr]
    if "_BPyOpsSubModOp" not in names and "_op_create_function" not in names:
        return f"bpy.ops has neither _BPyOpsSubModOp (<= 5.0) nor _op_create_function (>= 5.1) in {version}"
    return None


def _asyncio_ready_queue() -> str | None:
    import asyncio
    import collections
    import inspect

    loop = asyncio.SelectorEventLoop()
    try:
        if not isinstance(getattr(loop, "_ready", None), collections.deque):
            return "BaseEventLoop._ready is no longer a deque of ready handles"
        handle = loop.call_soon(int)
        if getattr(handle, "_cancelled", None) is not False:
            return "asyncio.Handle._cancelled is gone"
        handle.cancel()
        run_once = inspect.getsource(type(loop)._run_once)  # type: ignore[attr-defined]
    finally:
        loop.close()
    for line in ("ntodo = len(self._ready)", "self._ready.popleft()", "if handle._cancelled:"):
        if line not in run_once:
            return f"BaseEventLoop._run_once no longer has {line!r}"
    if run_once.index("self._selector.select(") > run_once.index("ntodo = len(self._ready)"):
        return "BaseEventLoop._run_once no longer polls the selector before it runs the ready handles"
    return None


INTERNALS: tuple[Internal, ...] = (
    Internal(
        "concurrent.futures.Future's private state (_state, _condition, _waiters, _done_callbacks, "
        "_result, _exception, _invoke_callbacks) and the state names in concurrent.futures._base",
        "_future",
        "MainThreadFuture is a real Future without Future.__init__'s Condition per task: it keeps "
        "Future's private layout so that concurrent.futures.wait/as_completed and "
        "asyncio.wrap_future, which read it, keep working",
        "Future.__init__ and its lock for every task: about twice the cost of a queued task",
        _future_layout,
        ("concurrent.futures._base",),
    ),
    Internal(
        "threading._register_atexit",
        "_lifecycle, _progress",
        "runs the stop at exit before Python joins non-daemon threads, so a worker blocked in "
        "call_on_main gets SchedulerStopped instead of hanging the exit (atexit runs too late)",
        "none in the standard library: an exit would hang with a worker blocked on the main thread",
        _register_atexit,
        ("threading._register_atexit",),
    ),
    Internal(
        "concurrent.futures.thread's exit hook (_python_exit), registered when the module is imported",
        "_lifecycle",
        "exit hooks run in reverse order: the package imports concurrent.futures.thread before "
        "registering its own, so executor threads blocked in call_on_main are released before "
        "concurrent.futures joins them",
        "none: a ThreadPoolExecutor thread blocked on the main thread would hang the exit",
        _executor_exit_hook,
        ("concurrent.futures.thread",),
    ),
    Internal(
        "the CALL_FUNCTION_EX opcode (dis) and frames' f_code/f_lineno/f_back",
        "_interrupts",
        "the Ctrl-C guard tells a task's own code (raise now) from the dispatcher's bookkeeping "
        "(hold the signal back) by the line of run_batch the signal interrupted",
        "a flag set around every task: a cost per task",
        _task_call_opcode,
        ("CALL_FUNCTION_EX",),
    ),
    Internal(
        "sys._getframe",
        "_dispatch",
        "a pump() nested in a task delivers a Ctrl-C held back to that task: it looks at the frame "
        "it returns to (only when a signal was held back)",
        "inspect.currentframe(), which is sys._getframe",
        _getframe,
        ("sys._getframe",),
    ),
    Internal(
        "sys._base_executable",
        "_interpreter",
        "in a venv, the base interpreter is another candidate for the worker processes",
        "the other candidates (sys.executable, pythonX.Y in the prefixes and on PATH)",
        _base_executable,
        ("sys._base_executable",),
    ),
    Internal(
        "threading._active and threading._DummyThread",
        "_strict",
        "strict mode tells a thread Python started from a foreign one without making a _DummyThread "
        "for it, as threading.current_thread() would on a thread Python did not start",
        "threading.current_thread(): leaks a _DummyThread per foreign thread",
        _thread_registry,
        ("threading._active", "threading._DummyThread"),
    ),
    Internal(
        "sys.modules[\"__mp_main__\"], multiprocessing's alias of the script's __main__",
        "_errors",
        "Debian's Blender 3.4.1 segfaults at exit when the alias outlives the script's __main__: "
        "the import of concurrent.futures.process (ProcessDied's base class) in Blender removes "
        "the alias that importing multiprocessing made",
        "none: Blender 3.4.1 would crash at exit",
        _mp_main_alias,
        ("__mp_main__",),
    ),
    Internal(
        "_winapi.CreatePipe and _winapi.PeekNamedPipe (Windows)",
        "_pipes",
        "a worker's result pipe with a 1 MiB buffer (os.pipe's is 4 KiB), and whether it holds data "
        "before the main thread reads it: Windows pipes cannot be non-blocking nor waited on with "
        "select. _winapi is what subprocess, multiprocessing (Connection.poll) and asyncio call",
        "the same two calls of kernel32 through ctypes",
        _winapi_pipes,
        ("_winapi.CreatePipe", "_winapi.PeekNamedPipe"),
    ),
    Internal(
        "bpy.ops._BPyOpsSubModOp (Blender <= 5.0) and bpy.ops._op_create_function (>= 5.1)",
        "_strict",
        "strict mode checks the thread of every operator call: it wraps what bpy.ops hands out",
        "none: strict mode could not see bpy.ops calls",
        _blender_operators,
        ("_BPyOpsSubModOp", "_op_create_function"),
    ),
    Internal(
        "asyncio: loop._ready, handle._cancelled, and the order of steps in BaseEventLoop._run_once",
        "_loop, _async",
        "_run_once runs `ntodo = len(self._ready)` callbacks with popleft(), all of them however long "
        "they take: MainLoop's _ready is a deque subclass that hands them out one by one, so an "
        "iteration can end at the UI pass's deadline (the tick budget); a callback kept back is "
        "handed out as a cancelled stand-in (_cancelled), which _run_once skips. bool(loop._ready) "
        "also says 'work now': call_soon from a coroutine leaves no other trace. Within one "
        "_run_once the selector is polled, then I/O callbacks and due timers are queued, then the "
        "ready ones run; add_reader makes one handle per fd, queued again each iteration the fd is "
        "ready (the second copy of a kept-back I/O handle is skipped by identity). Checked by "
        "test_async's deadline, UI timer and cut-off I/O tests",
        "step whole iterations with loop.stop(); loop.run_forever() (public: a stop() before "
        "run_forever() runs one iteration without waiting), and step once more after any iteration "
        "that ran something: a UI pass then overruns its budget by up to one whole iteration",
        _asyncio_ready_queue,
        ("loop._ready", "handle._cancelled", "_cancelled = True"),
    ),
)


def failures() -> list[str]:
    """What changed, one line per internal that is not as the package expects."""
    found = []
    for internal in INTERNALS:
        try:
            problem = internal.check()
        except Exception as exc:  # noqa: BLE001 - a check that breaks is itself the news
            problem = f"the check raised {exc!r}"
        if problem is not None:
            found.append(f"{internal.name}: {problem}")
    return found


if __name__ == "__main__":
    problems = failures()
    verdict = "all as expected" if not problems else "CHANGED"
    print(f"{len(INTERNALS)} internals checked on Python {sys.version.split()[0]}: {verdict}")
    for line in problems:
        print("  " + line)
    sys.exit(1 if problems else 0)
