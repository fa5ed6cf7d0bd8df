"""``strict_mode()``: during development, make ``bpy`` used from a worker thread fail loudly.

The mistake is otherwise silent until Blender crashes, most often as ``bpy.app.timers.register``
called from a worker (a data race in Blender's C code). While strict mode is on, these raise
``NotMainThreadError`` in a worker thread, before Blender is reached:

- ``bpy.app.timers.register(...)`` and ``bpy.app.timers.unregister(...)``: the module's functions
  are replaced by checking wrappers;
- ``bpy.ops.<module>.<operator>(...)`` and ``.poll()``: up to Blender 5.0 the methods of the Python
  class behind every operator (``bpy.ops._BPyOpsSubModOp``) are replaced (its ``__call__`` touches
  the view layer before it calls the operator, so checking later would be too late); from 5.1 on,
  where ``bpy.ops`` hands out C callables (``_op_create_function``), operators looked up while
  strict mode is on come wrapped in a checking proxy that passes everything else through;
- reading ``bpy.data`` and ``bpy.context`` through the ``bpy`` module: the module's class becomes a
  subclass of ``types.ModuleType`` with two properties that check, then return the very same
  objects, so ``isinstance``, ``temp_override`` and everything else see what they always see.

Not caught: references taken before, or on the main thread (``D = bpy.data`` at import, an object
or a mesh handed to the worker, ``from bpy.app.timers import register``), other ``bpy`` attributes
(``bpy.types``, ``bpy.utils``, ``bpy.app.handlers``...), and threads that Blender itself starts and
that call Python on purpose (drivers, render handlers: not threads of Python's ``threading``).

Strict mode is process-wide: copies of the library in one Blender share one record in
``sys.modules``, and any copy can turn it off. Off, the original functions, methods and module
class are back: it costs nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import types
from collections.abc import Callable
from typing import Any, NoReturn

from ._errors import MainThreadTasksError, NotMainThreadError
from ._shared import shared_record
from ._threadinfo import MAIN_THREAD_IDENT

__all__ = ("strict_mode",)

logger = logging.getLogger("mainthread_tasks")

ENVIRONMENT_VARIABLE = "MAINTHREAD_TASKS_STRICT"
#: Shared by every copy of the library in the process (a new layout gets a new name): ``patches``
#: is None while strict mode is off, else a list of ``(owner, name, original)`` to put back.
SHARED_RECORD = "_mainthread_tasks_strict_1"

_get_ident = threading.get_ident
# ident -> Thread, for threads Python started
_python_threads: dict[int, threading.Thread] | None = getattr(threading, "_active", None)
_enabled_here = False  # this copy turned strict mode on (register() turns it off again)


#: What strict mode replaced: (owner, attribute name, the original), to put back in reverse order.
Patches = list[tuple[Any, str, Any]]


def _shared_record() -> Any:
    # Any: a module object whose ``patches`` attribute is ours (Patches, or None while off).
    return shared_record(SHARED_RECORD, "mainthread_tasks strict mode: what to put back.", patches=None)


def _offending_thread() -> str | None:
    """The name of the calling thread if strict mode must refuse it, else None."""
    ident = _get_ident()
    if ident == MAIN_THREAD_IDENT:
        return None
    if _python_threads is None:  # pragma: no cover - every CPython has threading._active
        return threading.current_thread().name
    thread = _python_threads.get(ident)
    if thread is None or isinstance(thread, threading._DummyThread):
        return None  # a thread Blender started (a driver, a render handler): not ours to judge
    return thread.name


def _refuse(what: str, thread: str) -> NoReturn:
    raise NotMainThreadError(
        f"strict mode: {what} called from thread {thread!r}. bpy is not thread-safe; run this on the "
        "main thread instead: use post_on_main(fn, ...), or run_on_main/call_on_main to get a result"
    )


def _checked_function(original: Callable[..., Any], what: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def checked(*args: Any, **kwargs: Any) -> Any:
        thread = _offending_thread()
        if thread is not None:
            _refuse(what, thread)
        return original(*args, **kwargs)

    return checked


def _checked_method(original: Callable[..., Any], suffix: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:  # self: bpy.ops' operator class
        thread = _offending_thread()
        if thread is not None:
            _refuse(f"bpy.ops.{self._module}.{self._func}{suffix}", thread)
        return original(self, *args, **kwargs)

    return checked


class _CheckedOperator:
    """A ``bpy.ops`` operator (Blender >= 5.1: a C callable) whose calls and poll() check the thread."""

    __slots__ = ("_operator", "_name")

    def __init__(self, operator: Any, name: str) -> None:  # operator: Blender's C callable
        self._operator = operator
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        thread = _offending_thread()
        if thread is not None:
            _refuse(f"bpy.ops.{self._name}()", thread)
        return self._operator(*args, **kwargs)

    def poll(self, *args: Any) -> Any:
        thread = _offending_thread()
        if thread is not None:
            _refuse(f"bpy.ops.{self._name}.poll()", thread)
        return self._operator.poll(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._operator, name)

    def __repr__(self) -> str:
        return repr(self._operator)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]  # the operator's, not the class's
        doc: str | None = self._operator.__doc__
        return doc


def _checked_operator_factory(original: Callable[[str, str], Any]) -> Callable[[str, str], _CheckedOperator]:
    @functools.wraps(original)
    def create_function(module: str, func: str) -> _CheckedOperator:
        return _CheckedOperator(original(module, func), f"{module}.{func}")

    return create_function


def _checked_module_class(bpy_module: types.ModuleType) -> type:
    """A ModuleType subclass whose ``data``/``context`` properties check the thread, then return the
    objects the module holds (setting them still works, for Blender's own code)."""

    def attribute(name: str) -> property:
        def get(module: types.ModuleType) -> Any:
            thread = _offending_thread()
            if thread is not None:
                _refuse(f"bpy.{name}", thread)
            return module.__dict__[name]

        def put(module: types.ModuleType, value: object) -> None:
            module.__dict__[name] = value

        return property(get, put)

    return type(
        "StrictBpyModule",
        (type(bpy_module),),
        {"__slots__": (), "data": attribute("data"), "context": attribute("context")},
    )


def _patch(bpy: Any) -> Patches:
    timers = getattr(getattr(bpy, "app", None), "timers", None)
    # From the module's own names: bpy.ops.__getattr__ makes up a submodule for any other name.
    ops = getattr(bpy, "ops", None)
    names: dict[str, Any] = getattr(ops, "__dict__", {})
    ops_class = names.get("_BPyOpsSubModOp")  # Blender <= 5.0
    ops_factory: Any = names.get("_op_create_function")  # Blender >= 5.1
    if timers is None or (ops_class is None and ops_factory is None) or type(bpy) is not types.ModuleType:
        raise MainThreadTasksError(f"strict_mode() needs Blender's bpy module, not {bpy!r}")
    patches: Patches = []

    def replace(owner: Any, name: str, new: object) -> None:
        patches.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)

    for name in ("register", "unregister"):
        replace(timers, name, _checked_function(getattr(timers, name), f"bpy.app.timers.{name}()"))
    if ops_class is not None:
        replace(ops_class, "__call__", _checked_method(ops_class.__dict__["__call__"], "()"))
        replace(ops_class, "poll", _checked_method(ops_class.__dict__["poll"], ".poll()"))
    else:
        replace(ops, "_op_create_function", _checked_operator_factory(ops_factory))
    patches.append((bpy, "__class__", type(bpy)))
    bpy.__class__ = _checked_module_class(bpy)
    return patches


def strict_mode(enabled: bool) -> bool:
    """Turn strict mode on or off; return whether it was on. Main thread.

    On, a thread started by Python (``threading.Thread``, a ``ThreadPoolExecutor``...) that calls
    ``bpy.app.timers.register``/``unregister`` or a ``bpy.ops`` operator (or its ``poll()``), or
    reads ``bpy.data``/``bpy.context``, gets ``NotMainThreadError`` before Blender is reached. The
    main thread, and threads Blender starts itself (drivers), are not affected. For development:
    each checked access costs a Python call. Off (the default), everything is as Blender made it.
    ``MAINTHREAD_TASKS_STRICT=1`` in the environment turns it on at ``register()``; the last
    ``unregister()`` of the copy that turned it on turns it off.

    Raises:
        TypeError: ``enabled`` is not a bool.
        NotMainThreadError: called from another thread.
        MainThreadTasksError: no Blender ``bpy`` to guard (plain Python, fake-bpy-module).
    """
    global _enabled_here
    if not isinstance(enabled, bool):
        raise TypeError(f"strict_mode() takes True or False, got {enabled!r}")
    if _get_ident() != MAIN_THREAD_IDENT:
        raise NotMainThreadError("strict_mode() patches bpy, so only the main thread may call it")
    record = _shared_record()
    was_on = record.patches is not None
    if enabled and not was_on:
        try:
            import bpy
        except ImportError:
            raise MainThreadTasksError("strict_mode() needs Blender: bpy cannot be imported here") from None
        record.patches = _patch(bpy)
        _enabled_here = True
        logger.info("mainthread_tasks: strict mode on: bpy used from worker threads raises NotMainThreadError")
    elif not enabled and was_on:
        for owner, name, original in reversed(record.patches):
            setattr(owner, name, original)
        record.patches = None
        _enabled_here = False
        logger.info("mainthread_tasks: strict mode off")
    return was_on


def enable_from_environment() -> None:
    """register(): MAINTHREAD_TASKS_STRICT=1 (or true/yes/on) turns strict mode on. Main thread."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        strict_mode(True)
    elif value not in ("", "0", "false", "no", "off"):
        logger.warning("mainthread_tasks: %s=%r is not 1 or 0; strict mode stays off", ENVIRONMENT_VARIABLE, value)


def disable_if_enabled_here() -> None:
    """The last unregister(): leave Blender as this copy found it. Main thread."""
    if _enabled_here:
        strict_mode(False)
