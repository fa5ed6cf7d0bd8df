"""The worker process of a local pool: its entry point, and how a task runs (standard library only).

The parent (``_pool``) starts ``python -I <this file> TASK_PIPE RESULT_PIPE PARENT_PID`` with an
interpreter of its own Python version; the pipes are file descriptors, on Windows handles. Run by
path, this file is the child's ``__main__``: the child never runs the parent's ``__main__``
(Blender's ``--python`` script) and never imports ``bpy``. Messages travel in the format of
``_wire``: one task is in flight per child, and its reply repeats its number. A task's header
carries ``sys_path`` when it differs from what the child has (the first task, and after the
parent's ``sys.path`` changed), and the ``__path__`` of the packages that contain the modules the
body refers to (see ``import_module``).

The parent reads anything else in the result pipe (a task writing into it, a wrong number, sizes
over the limits) as the worker's fault: it fails that task and replaces the worker.

The worker's two pipes are its own: a process that a task starts never holds them (see
``_keep_pipes_to_ourselves``).

The child ends when its task pipe reaches end-of-file (the parent closed it, or died) or when the
parent stops it with SIGTERM/SIGKILL. It ignores SIGINT: Ctrl-C in Blender's terminal is for
Blender, which stops its workers itself. A cluster pool's broker uses this module too (``execute``
on the Dask workers, and the pipe and parent helpers below).
"""

from __future__ import annotations

import copyreg
import importlib
import importlib.util
import io
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Iterable
from importlib.machinery import ModuleSpec
from typing import IO, Any

if __package__:
    from . import _wire
elif "mainthread_tasks_wire" in sys.modules:  # loaded by the broker (see _wire.load_sibling)
    _wire = sys.modules["mainthread_tasks_wire"]
else:  # run by path (python -I .../_process_child.py): its folder is not on sys.path
    _spec = importlib.util.spec_from_file_location(
        "mainthread_tasks_wire", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_wire.py")
    )
    assert _spec is not None and _spec.loader is not None
    _wire = sys.modules["mainthread_tasks_wire"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_wire)

# -- imports in the child -----------------------------------------------------------------------


class _NoBlender:
    """A meta path finder: ``bpy`` fails to import at once, with the reason (the bpy wheel may be
    installed where the child would find it, and importing it costs a second and much memory)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in ("bpy", "_bpy"):
            raise ModuleNotFoundError(
                f"No module named {name!r}: run_in_process runs fn in a plain Python worker process, "
                "without Blender; keep bpy out of the modules fn needs and pass plain data",
                name=name,
            )
        return None


def _stand_in_package(name: str, path: Iterable[str]) -> None:
    # A package with the parent's __path__ but none of its __init__ code: its submodules import
    # from the same folders, its own body (which in an add-on imports bpy) never runs.
    spec = ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = list(path)
    module = importlib.util.module_from_spec(spec)
    module.__doc__ = f"Stand-in for the package {name!r} of the parent process (its __init__ did not run here)."
    sys.modules[name] = module
    parent, _, leaf = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], leaf, module)


def import_module(name: str, packages: dict[str, list[str]]) -> None:
    """Import ``name`` for the task being unpickled.

    First as Python would. If that fails and the parent sent the ``__path__`` of packages that
    contain the module (an add-on: ``my_addon.work`` or ``bl_ext.user_default.my_addon.work``,
    whose package ``__init__`` imports bpy; ``bl_ext`` and ``bl_ext.<repo>``, which Blender makes
    at run time), those that are missing here become stand-ins with the parent's ``__path__``
    whose ``__init__`` never runs, and the module is imported again: only the module itself runs.
    """
    try:
        importlib.import_module(name)
        return
    except Exception:
        parts = name.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        missing = [p for p in parents if p in packages and p not in sys.modules]
        if not missing:
            raise
    for package in missing:
        _stand_in_package(package, packages[package])
    importlib.import_module(name)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], packages: dict[str, list[str]]) -> None:
        super().__init__(file)
        self._packages = packages

    def find_class(self, module: str, name: str) -> Any:
        if module not in sys.modules:
            import_module(module, self._packages)
        return super().find_class(module, name)


# -- running tasks ---------------------------------------------------------------------------------


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


# How many characters of an exception's message and traceback go back: at most 4 bytes each, the
# header stays within MAX_HEADER_BYTES.
_MAX_TEXT = 100_000


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half:,} characters left out ...]\n{text[-half:]}"


def failure_of(exc: BaseException, limit: int) -> tuple[tuple[str, str, str], bytes]:
    """``((type name, message, traceback text), pickled exception or b"")`` for a failed task."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        message = f"<{type(exc).__name__} with an unprintable message>"
    try:
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
        # Without the reducers registered for exception classes: Dask's workers register tblib's
        # for every one (copyreg), whose pickles Blender could not load (it has no tblib).
        pickler.dispatch_table = {
            kind: reduce
            for kind, reduce in copyreg.dispatch_table.items()
            if not (isinstance(kind, type) and issubclass(kind, BaseException))
        }
        pickler.dump(exc)
        body = buffer.getvalue()
        pickle.loads(body)  # e.g. a required __init__ argument missing from args: fails here, not in Blender
    except BaseException:  # noqa: BLE001 - the parent then raises a stand-in with the same text
        body = b""
    if len(body) > limit:  # the parent refuses bodies over its limit: the stand-in carries the text
        body = b""
    return (_clip(_type_name(exc), 1000), _clip(message), _clip(tb)), body


def execute(body: bytes, packages: dict[str, list[str]], limit: int) -> tuple[tuple[str, str, str] | None, bytes]:
    """Unpickle the call in ``body`` and run it: ``(None, pickled result)`` or ``(failure,
    pickled exception)`` (see ``failure_of``). Never raises.

    What a Dask worker runs for a cluster pool too: the broker's worker plugin loads this module
    there from its source (so it uses nothing but the standard library and ``_wire``), and the
    worker keeps its own ``sys.path``.
    """
    try:
        fn, args, kwargs = _Unpickler(io.BytesIO(body), packages).load()
        del body
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - like ProcessPoolExecutor: every failure goes back
        return failure_of(exc, limit)
    del fn, args, kwargs
    try:
        data = pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # noqa: BLE001 - whatever a __reduce__ raises goes back as this TypeError
        error: Exception = TypeError(
            f"the result ({type(result).__name__}) cannot be pickled, so it cannot be sent back to Blender: "
            f"{exc}; return plain data (numbers, strings, lists, tuples, dicts, bytes)"
        )
        error.__cause__ = exc
        return failure_of(error, limit)
    if len(data) > limit:
        error = ValueError(
            f"the result pickles to {len(data):,} bytes, more than the {limit:,} bytes a result "
            "may take; write large data to a file and return its path"
        )
        return failure_of(error, limit)
    return None, data


def run_task(header: bytes, body: bytes, state: dict[str, int]) -> tuple[bytes, bytes]:
    """Run one task of a local worker; return the reply ``(header, body)``. Never raises."""
    number = 0
    try:
        number, sys_path, packages, state["limit"] = pickle.loads(header)  # (from the parent only)
        if sys_path is not None:
            sys.path[:] = sys_path
    except BaseException as exc:  # noqa: BLE001 - every failure goes back
        failed, data = failure_of(exc, state["limit"])
        return _wire.reply_header(number, failed), data
    failure, data = execute(body, packages, state["limit"])
    return _wire.reply_header(number, failure), data


def _open_pipes(task_pipe: str, result_pipe: str) -> tuple[int, int]:
    """The file descriptors of the pipes named on the command line (Windows passes handles)."""
    if sys.platform == "win32":
        import msvcrt

        return (
            msvcrt.open_osfhandle(int(task_pipe), os.O_RDONLY | os.O_BINARY),
            msvcrt.open_osfhandle(int(result_pipe), os.O_WRONLY | os.O_BINARY),
        )
    return int(task_pipe), int(result_pipe)


def _keep_pipes_to_ourselves(fds: tuple[int, int]) -> None:
    """Make sure no process a task starts holds the worker's pipes.

    One that did would outlive the worker with them: the parent would never see end-of-file on the
    result pipe, and a task written to a dead worker's task pipe would wait there unread. The parent
    passed them as inheritable (``pass_fds``; on Windows a handle list): now programs that a task runs
    (``os.system``, ``subprocess`` with ``close_fds=False``, a C library that forks and execs or calls
    CreateProcess) do not get them, and a fork made by Python (``os.fork``, multiprocessing's fork
    workers) closes them at once. A fork made in C that never execs keeps them: the parent watches
    the worker process itself too (``_process._process_exit_fd``).
    """
    for fd in fds:
        os.set_inheritable(fd, False)  # (on Windows: the handle behind the fd)
    if sys.platform == "win32":  # no fork there
        return

    def close_in_fork() -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    os.register_at_fork(after_in_child=close_in_fork)


#: PR_SET_PDEATHSIG, from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


def _end_with_parent(parent_pid: int) -> None:
    """On Linux, be killed (SIGKILL) when the parent dies, even in the middle of a task.

    An idle worker ends by itself when the parent dies (end-of-file on its task pipe), but a busy
    one would finish its task first, minutes maybe, for nobody. Windows does the same with the
    parent's Job Object (``_windows``); macOS has no such thing (the task runs to its end, then
    the worker sees the pipe closed and exits). The parent is the thread that started this process:
    the main thread, which lives as long as the parent does.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (ImportError, OSError, AttributeError):  # a Python without ctypes, a libc without prctl
        return
    if os.getppid() != parent_pid:  # the parent died before the line above: nobody would signal us
        os._exit(0)


#: This worker's ``(task fd, result fd)`` (the tests write into them as a misbehaving task would).
pipes = (-1, -1)


def main(argv: list[str]) -> int:
    global pipes
    _end_with_parent(int(argv[3]))
    task_fd, result_fd = pipes = _open_pipes(argv[1], argv[2])
    _keep_pipes_to_ourselves(pipes)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.meta_path.insert(0, _NoBlender())
    state = {"limit": 0}
    while True:
        try:
            message = _wire.read_message(task_fd)
        except _wire.BadMessage as exc:  # not from our parent: nothing sensible to do but end
            print(
                f"mainthread_tasks worker process {os.getpid()}: its task pipe holds no task ({exc})", file=sys.stderr
            )
            return 2
        if message is None:  # the parent closed the pipe or is gone
            return 0
        reply = run_task(*message, state)
        del message
        try:
            _wire.write_message(result_fd, *reply)
        except BrokenPipeError:
            return 0


def exit_at_once(code: int) -> None:
    """End the process with ``code`` once stdout and stderr are flushed, with no interpreter
    shutdown: a thread left running (one that a task started, or the broker's Dask client) must
    not keep it alive."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_at_once(main(sys.argv))
