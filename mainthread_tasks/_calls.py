"""What a task is made of on its way to a worker process: its call pickled at submit (no bpy).

A call is pickled in the submitting thread, so what cannot go to a worker process fails there, at
once, with a TypeError that says why: a lambda, ``__main__`` (the script Blender runs, which a
worker cannot import), a Blender module. Every pool sends the same pickle: a local worker
unpickles it, and so does a Dask worker (``_process_child.execute``).
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections.abc import Callable
from typing import IO, Any

from . import _wire
from ._args import task_name

__all__ = ("BLENDER_MODULES", "Limits", "limits", "pickle_call")

#: Top-level modules that exist only inside Blender. The worker blocks ``bpy`` itself (the bpy
#: wheel may be installed where it would find it); ``pickle_call`` refuses to send anything that needs
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


class Limits:
    """How large what crosses the pipes may be. Any thread reads; tests change it."""

    __slots__ = ("max_message_bytes",)

    def __init__(self) -> None:
        #: The largest pickled arguments or result a task may have, in bytes. Larger data belongs
        #: in a file: the main thread reads every result, and a gigabyte takes it a while.
        self.max_message_bytes = 1 << 30


limits = Limits()


class _CallPickler(pickle.Pickler):
    """Pickles a call and notes the module of every function and class it refers to by name."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file, _wire.PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj: object) -> Any:
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
        return NotImplemented


def pickle_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], caller: str = "run_in_process"
) -> tuple[bytes, dict[str, list[str]]]:
    """``(body, packages)`` for a task; raises TypeError/ValueError for what cannot be sent."""
    buffer = io.BytesIO()
    pickler = _CallPickler(buffer)
    try:
        pickler.dump((fn, args, kwargs))
    except Exception as exc:
        try:
            pickle.dumps(fn, _wire.PROTOCOL)
            what = "one of its arguments"
        except Exception:  # noqa: BLE001 - a __reduce__ may raise anything: the fn is the culprit then
            what = "the function itself"
        raise TypeError(
            f"{caller}({task_name(fn)}, ...): {what} cannot be pickled, so it cannot be sent "
            f"to a worker process: {exc}. Use a function defined at the top level of a module (not a lambda, "
            "a nested function or a bound method of an unpicklable object) and plain data"
        ) from exc
    if "__main__" in pickler.modules:
        raise TypeError(
            f"{caller}({task_name(fn)}, ...): it needs something defined in __main__ (the "
            "script Blender runs), which a worker process cannot import; move the function (and any class it "
            "is given) into a module of its own and import it from there"
        )
    blender = sorted(m for m in pickler.modules if m.partition(".")[0] in BLENDER_MODULES)
    if blender:
        raise TypeError(
            f"{caller}({task_name(fn)}, ...): it needs Blender's module(s) {', '.join(blender)}, "
            "which a worker process does not have (it runs plain Python); pass plain data and do the bpy work "
            "on the main thread with the result"
        )
    body = buffer.getvalue()
    if len(body) > limits.max_message_bytes:
        raise ValueError(
            f"{caller}({task_name(fn)}, ...): the arguments pickle to {len(body):,} bytes, more "
            f"than {limits.max_message_bytes:,}; pass a file path and read the data in the worker"
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
