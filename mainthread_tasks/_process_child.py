"""The worker process of ``run_in_process``: its entry point and the wire format (standard library only).

The parent (``_process``) starts ``python -I <this file> TASK_PIPE RESULT_PIPE PARENT_PID`` with an
interpreter of its own Python version; the pipes are file descriptors, on Windows handles. Run by
path, this file is the child's ``__main__``: the child never runs the parent's ``__main__``
(Blender's ``--python`` script) and never imports ``bpy``. The parent also imports this module,
for the wire format below.

Wire format, both ways: a message is a 16-byte prefix (the magic ``MAGIC``, the header length as
an unsigned 32-bit and the body length as an unsigned 64-bit integer, little-endian), the header and
the body (a pickle, or empty). Headers hold built-in data only: the parent reads a reply's with
``parse_reply_header``, which runs no code, whatever junk the result pipe holds. One task is in
flight per child; each task carries a number that its reply repeats, so a reply is never taken for
another task's.

- parent -> child: header ``(number, sys_path or None, packages, max_result_bytes)``, body the
  pickled ``(fn, args, kwargs)``. ``sys_path`` is sent when it differs from what the child has (the
  first task, and after the parent's ``sys.path`` changed). ``packages`` maps the names of the
  packages that contain the modules the body refers to, to their ``__path__`` in the parent (see
  ``import_module``).
- child -> parent (``reply_header``): header ``REPLY.pack(number, 1)`` and the pickled result, or
  ``REPLY.pack(number, 0)`` followed by the pickled ``(type name, message, traceback text)``, and
  the pickled exception (empty when it cannot be pickled or is larger than ``max_result_bytes``).
  A header never exceeds ``MAX_HEADER_BYTES``.

The parent reads anything else in the result pipe (a task writing into it, a wrong number, sizes
over the limits) as the worker's fault: it fails that task and replaces the worker.

The worker's two pipes are its own: a process that a task starts never holds them (see
``_keep_pipes_to_ourselves``).

The child ends when its task pipe reaches end-of-file (the parent closed it, or died) or when the
parent stops it with SIGTERM/SIGKILL. It ignores SIGINT: Ctrl-C in Blender's terminal is for
Blender, which stops its workers itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import pickle
import signal
import struct
import sys
import traceback
from collections.abc import Iterable
from importlib.machinery import ModuleSpec
from typing import IO, Any

PREFIX = struct.Struct("<4sIQ")
MAGIC = b"MTp1"  # what every message starts with (p: process, 1: this format)
REPLY = struct.Struct("<QB")  # how a reply's header starts: the task's number, 1 (a result) or 0 (a failure)
#: The largest header either side sends; the child shortens long exception texts to stay below it.
MAX_HEADER_BYTES = 1 << 20
PROTOCOL = pickle.HIGHEST_PROTOCOL  # the same on both sides: parent and child run one Python version

#: Top-level modules that exist only inside Blender. The child blocks ``bpy`` itself (the bpy wheel
#: may be installed where the child would find it); the parent refuses to send anything that needs
#: one of these.
BLENDER_MODULES = frozenset(
    {
        "_bpy",
        "_bpy_types",
        "addon_utils",
        "aud",
        "bgl",
        "bl_math",
        "bl_operators",
        "bl_ui",
        "blf",
        "bmesh",
        "bpy",
        "bpy_extras",
        "bpy_types",
        "freestyle",
        "gpu",
        "gpu_extras",
        "idprop",
        "imbuf",
        "mathutils",
    }
)

_SMALL = 1 << 16  # a body this small goes out in the same write as its prefix and header


class BadMessage(ValueError):
    """What is in a pipe is not a message of this format (or is over its limits)."""


def pack_prefix(header_size: int, body_size: int) -> bytes:
    return PREFIX.pack(MAGIC, header_size, body_size)


def unpack_prefix(data: bytes | bytearray | memoryview, max_body: int | None = None) -> tuple[int, int]:
    """``(header size, body size)`` from a message's first ``PREFIX.size`` bytes.

    Raises:
        BadMessage: the magic is wrong, the header is over ``MAX_HEADER_BYTES``, or the body over
            ``max_body`` (when given).
    """
    magic, header_size, body_size = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise BadMessage(f"it starts with {bytes(data[: PREFIX.size])!r}, not a message")
    if header_size > MAX_HEADER_BYTES:
        raise BadMessage(f"it announces a header of {header_size:,} bytes, more than {MAX_HEADER_BYTES:,}")
    if max_body is not None and body_size > max_body:
        raise BadMessage(f"it announces a body of {body_size:,} bytes, more than {max_body:,}")
    return header_size, body_size


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a header may hold built-in data only, not {module}.{name}")


def load_header(data: bytes | bytearray | memoryview) -> Any:
    """Unpickle a header: built-in data only, so no code runs. Raises BadMessage."""
    try:
        return _DataOnly(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - whatever the bytes make pickle raise, it is not a header
        raise BadMessage(f"its header does not unpickle: {exc!r}") from None


def reply_header(number: int, failure: tuple[str, str, str] | None = None) -> bytes:
    """The header of the reply to task ``number``: a result, or the ``failure``'s (type name,
    message, traceback text)."""
    if failure is None:
        return REPLY.pack(number, 1)
    return REPLY.pack(number, 0) + pickle.dumps(failure, PROTOCOL)


def parse_reply_header(data: bytes | bytearray | memoryview) -> tuple[int, tuple[str, str, str] | None]:
    """``(number, failure)`` from a reply's header (see ``reply_header``). Raises BadMessage."""
    if len(data) >= REPLY.size:
        number, ok = REPLY.unpack_from(data)
        if ok == 1 and len(data) == REPLY.size:
            return number, None
        if ok == 0:
            failure = load_header(data[REPLY.size :])
            if isinstance(failure, tuple) and len(failure) == 3 and all(isinstance(x, str) for x in failure):
                return number, failure
    raise BadMessage(f"its header {bytes(data[:40])!r} is no reply's")


def write_message(fd: int, header: bytes, body: bytes = b"") -> None:
    """Write one message to the pipe ``fd`` (blocking). Raises OSError (BrokenPipeError) if the
    reader is gone."""
    data = pack_prefix(len(header), len(body)) + header
    if len(body) <= _SMALL:
        data += body
        body = b""
    for part in (data, body):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 24))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> tuple[bytes, bytes] | None:
    """Read one message from ``fd`` (blocking): ``(header, body)``, or None at end-of-file.

    Raises:
        BadMessage: what came is not a message.
    """
    prefix = _read_exact(fd, PREFIX.size)
    if prefix is None:
        return None
    header_size, body_size = unpack_prefix(prefix)
    header = _read_exact(fd, header_size)
    body = _read_exact(fd, body_size)
    if header is None or body is None:
        return None
    return header, body


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


def _failure(number: int, exc: BaseException, limit: int) -> tuple[bytes, bytes]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        message = f"<{type(exc).__name__} with an unprintable message>"
    try:
        body = pickle.dumps(exc, PROTOCOL)
        pickle.loads(body)  # e.g. a required __init__ argument missing from args: fails here, not in Blender
    except BaseException:  # noqa: BLE001 - the parent then raises a stand-in with the same text
        body = b""
    if len(body) > limit:  # the parent refuses bodies over its limit: the stand-in carries the text
        body = b""
    return reply_header(number, (_clip(_type_name(exc), 1000), _clip(message), _clip(tb))), body


def run_task(header: bytes, body: bytes, state: dict[str, int]) -> tuple[bytes, bytes]:
    """Run one task; return the reply ``(header, body)``. Never raises."""
    number = 0
    try:
        number, sys_path, packages, state["limit"] = pickle.loads(header)  # (from the parent only)
        if sys_path is not None:
            sys.path[:] = sys_path
        fn, args, kwargs = _Unpickler(io.BytesIO(body), packages).load()
        del body
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - like ProcessPoolExecutor: every failure goes back
        return _failure(number, exc, state["limit"])
    del fn, args, kwargs
    try:
        data = pickle.dumps(result, PROTOCOL)
    except BaseException as exc:  # noqa: BLE001 - whatever a __reduce__ raises goes back as this TypeError
        error: Exception = TypeError(
            f"the result ({type(result).__name__}) cannot be pickled, so it cannot be sent back to Blender: "
            f"{exc}; return plain data (numbers, strings, lists, tuples, dicts, bytes)"
        )
        error.__cause__ = exc
        return _failure(number, error, state["limit"])
    if len(data) > state["limit"]:
        error = ValueError(
            f"the result pickles to {len(data):,} bytes, more than the {state['limit']:,} bytes a result "
            "may take; write large data to a file and return its path"
        )
        return _failure(number, error, state["limit"])
    return reply_header(number), data


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
            message = read_message(task_fd)
        except BadMessage as exc:  # not from our parent: nothing sensible to do but end
            print(
                f"mainthread_tasks worker process {os.getpid()}: its task pipe holds no task ({exc})", file=sys.stderr
            )
            return 2
        if message is None:  # the parent closed the pipe or is gone
            return 0
        reply = run_task(*message, state)
        del message
        try:
            write_message(result_fd, *reply)
        except BrokenPipeError:
            return 0


if __name__ == "__main__":
    code = main(sys.argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    # No interpreter shutdown: a thread that fn left running must not keep the worker alive.
    os._exit(code)
