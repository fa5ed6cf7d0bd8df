"""What the public functions check about their arguments, and how a task is named (no bpy)."""

from __future__ import annotations

import math
import numbers

__all__ = ("check_timeout", "not_callable", "task_name")


def task_name(fn: object) -> str:
    """A readable name for a callable, for logs and stats. Never raises, whatever ``fn`` does."""
    try:
        name = getattr(fn, "__qualname__", None)
        if isinstance(name, str):
            module = getattr(fn, "__module__", None)
            return f"{module}.{name}" if isinstance(module, str) else name
        return repr(fn)
    except Exception:  # noqa: BLE001 - a proxy or command object whose __getattr__/__repr__ raises
        return f"<{type(fn).__qualname__} object at {id(fn):#x}>"


def not_callable(fn: object) -> TypeError:
    """The error for a task that is not callable (raised in the caller, at submit time)."""
    return TypeError(
        f"fn must be callable, got {type(fn).__name__} {fn!r:.80}; "
        "pass a function (mainthread_tasks never evaluates strings of code)"
    )


def check_timeout(timeout: object, what: str) -> float:
    """``timeout`` as a float of seconds >= 0 (inf allowed), or TypeError/ValueError naming ``what``."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{what}: timeout must be a number of seconds or None, got {timeout!r}")
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what}: timeout must be >= 0 seconds or None, got {timeout!r}")
    return value
