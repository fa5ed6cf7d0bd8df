"""The worker process of ``run_in_process``: its entry point and the wire format (standard library only).

The parent (``_process``) starts ``python -I <this file> TASK_FD RESULT_FD`` with an interpreter of
its own Python version. Run by path, this file is the child's ``__main__``: the child never runs
the parent's ``__main__`` (Blender's ``--python`` script) and never imports ``bpy``. The parent
also imports this module, for the wire format below.

Wire format, both ways: a message is a 16-byte prefix (header length, body length; little-endian
unsigned 64-bit), the header (a small pickle of built-in types) and the body (a pickle, or empty).
One task is in flight per child, so no message carries an id.

- parent -> child: header ``(sys_path or None, packages, max_result_bytes)``, body the pickled
  ``(fn, args, kwargs)``. ``sys_path`` is sent when it differs from what the child has (the first
  task, and after the parent's ``sys.path`` changed). ``packages`` maps the names of the packages
  that contain the modules the body refers to, to their ``__path__`` in the parent (see
  ``import_module``).
- child -> parent: header ``(True, None)`` and the pickled result, or ``(False, (type name,
  message, traceback text))`` and the pickled exception (empty when it cannot be pickled).

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

PREFIX = struct.Struct("<QQ")
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


def write_message(fd: int, header: bytes, body: bytes = b"") -> None:
    """Write one message to the pipe ``fd`` (blocking). Raises OSError (BrokenPipeError) if the
    reader is gone."""
    data = PREFIX.pack(len(header), len(body)) + header
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
    """Read one message from ``fd`` (blocking): ``(header, body)``, or None at end-of-file."""
    prefix = _read_exact(fd, PREFIX.size)
    if prefix is None:
        return None
    header_size, body_size = PREFIX.unpack(prefix)
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


def _failure(exc: BaseException) -> tuple[bytes, bytes]:
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
    return pickle.dumps((False, (_type_name(exc), message, tb)), PROTOCOL), body


def run_task(header: bytes, body: bytes, state: dict[str, int]) -> tuple[bytes, bytes]:
    """Run one task; return the reply ``(header, body)``. Never raises."""
    try:
        sys_path, packages, limit = pickle.loads(header)
        if sys_path is not None:
            sys.path[:] = sys_path
        state["limit"] = limit
        fn, args, kwargs = _Unpickler(io.BytesIO(body), packages).load()
        del body
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - like ProcessPoolExecutor: every failure goes back
        return _failure(exc)
    del fn, args, kwargs
    try:
        data = pickle.dumps(result, PROTOCOL)
    except BaseException as exc:  # noqa: BLE001 - whatever a __reduce__ raises goes back as this TypeError
        error: Exception = TypeError(
            f"the result ({type(result).__name__}) cannot be pickled, so it cannot be sent back to Blender: "
            f"{exc}; return plain data (numbers, strings, lists, tuples, dicts, bytes)"
        )
        error.__cause__ = exc
        return _failure(error)
    if len(data) > state["limit"]:
        error = ValueError(
            f"the result pickles to {len(data):,} bytes, more than the {state['limit']:,} bytes a result "
            "may take; write large data to a file and return its path"
        )
        return _failure(error)
    return pickle.dumps((True, None), PROTOCOL), data


def main(argv: list[str]) -> int:
    task_fd, result_fd = int(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.meta_path.insert(0, _NoBlender())
    state = {"limit": 0}
    while True:
        message = read_message(task_fd)
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
