"""Ctrl-C while the main thread dispatches: the SIGINT guard (no bpy).

Python runs a SIGINT handler (KeyboardInterrupt; also ``_thread.interrupt_main()``, as IDEs and
debuggers use) on the main thread between two bytecodes of whatever Python code runs there. Landing
in the dispatcher between taking a task off the queue and finishing its Future, the
KeyboardInterrupt would lose the task, or leave its Future running for ever and its
``call_on_main`` caller blocked; landing in a ``__del__``, a weakref callback or a ``gc`` callback
that the dispatcher's own decrefs and allocations run, it would be swallowed by Python ("Exception
ignored in ...") and the Ctrl-C lost. So while the main thread dispatches, ``GUARD`` stands in for
the SIGINT handler. When a signal comes it reads the frames the signal interrupted, out to the
innermost dispatcher frame:

- a task runner's frame on one of its task-call lines (``task_runner``): the signal is inside the
  task, or something the task called: it raises there at once, as Ctrl-C usually does;
- a frame that waits for work holding none (``interruptible``): it raises at once too;
- any other dispatcher frame (``dispatcher``; a task runner's own bookkeeping, done-callbacks and
  whatever its decrefs run included): the guard only records the signal. The dispatcher stops at
  its next safe point, after the task in hand, and delivers it there (``restore``), to the code that
  called it; a dispatcher nested inside a task delivers it to that task (``deliver_if_safe``).

Reading frames costs nothing per task: it happens only when a signal comes. Every guard saves the
handler it replaced on a stack, so nested guards (a task that waits on the main thread, one that
runs ``run_forever`` or installs its own handler) each put back exactly what they replaced. Where
Python runs no SIGINT handler (the Blender binary handles SIGINT in C) nothing is swapped.

The dispatcher code registers itself with the decorators below, at import.
"""

from __future__ import annotations

import dis
import signal
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, TypeVar

from ._threadinfo import is_main_thread

__all__ = ("GUARD", "dispatcher", "interruptible", "task_runner")

_F = TypeVar("_F", bound=Callable[..., Any])
Handler = Callable[[int, "FrameType | None"], Any]

# What each registered code object is (see the module docstring).
_DISPATCHER = 0  # a signal is held back
_INTERRUPTIBLE = 1  # a signal raises at once
_roles: dict[CodeType, int] = {}
_task_lines: dict[CodeType, frozenset[int]] = {}  # a task runner's task-call lines


def dispatcher(fn: _F) -> _F:
    """Decorator: a Ctrl-C landing in ``fn``, or in anything it calls, is held back (see above)."""
    _roles[fn.__code__] = _DISPATCHER
    return fn


def interruptible(fn: _F) -> _F:
    """Decorator: ``fn`` waits for work holding none: a Ctrl-C there raises at once."""
    _roles[fn.__code__] = _INTERRUPTIBLE
    return fn


def task_runner(fn: _F) -> _F:
    """Decorator for a dispatcher function that calls tasks as ``fn(*args)`` / ``fn(*args, **kw)``:
    a Ctrl-C inside such a call raises in the task; anywhere else in ``fn`` it is held back."""
    code = fn.__code__
    lines = _call_ex_lines(code)
    if not lines:  # a new Python that compiles f(*args) differently: the tests say so in every tier
        raise RuntimeError(f"mainthread_tasks: found no task call in {code.co_name}")
    _roles[code] = _DISPATCHER
    _task_lines[code] = lines
    return fn


def _call_ex_lines(code: CodeType) -> frozenset[int]:
    """The lines of ``code`` that call with ``*args`` (the CALL_FUNCTION_EX instruction)."""
    lines = set()
    line = None
    for instruction in dis.get_instructions(code):
        positions = getattr(instruction, "positions", None)  # Python 3.11+
        if positions is not None and positions.lineno is not None:
            line = positions.lineno
        elif isinstance(instruction.starts_line, int) and not isinstance(instruction.starts_line, bool):
            line = instruction.starts_line  # Python 3.10
        if instruction.opname == "CALL_FUNCTION_EX" and line is not None:
            lines.add(line)
    return frozenset(lines)


def may_raise_here(frame: FrameType | None) -> bool:
    """Whether a KeyboardInterrupt may be raised in ``frame`` (see the module docstring)."""
    called: FrameType | None = None  # the frame that the frame being looked at called
    while frame is not None:
        code = frame.f_code
        role = _roles.get(code)
        if role is not None:
            if role == _INTERRUPTIBLE:
                return True
            lines = _task_lines.get(code)
            return lines is not None and called is not None and frame.f_lineno in lines
        called, frame = frame, frame.f_back
    return True  # not dispatching after all


class InterruptGuard:
    """The SIGINT handler that stands in for Python's while the main thread dispatches.

    Main thread only: Python runs signal handlers there, and only the main thread dispatches.
    """

    __slots__ = ("deferred", "_replaced")

    def __init__(self) -> None:
        #: A SIGINT held back (signal number, frame), until the dispatcher's next safe point.
        self.deferred: tuple[int, FrameType | None] | None = None
        self._replaced: list[Handler] = []  # the handlers the guard stands in for, innermost last

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if may_raise_here(frame):
            self._replaced[-1](signum, frame)
        else:
            self.deferred = (signum, frame)

    def install(self) -> bool:
        """Stand in for the SIGINT handler unless a guard already does (or Python runs none).

        Returns True if it did: the caller must then ``restore()``, in a ``finally``.
        """
        if not is_main_thread():
            return False
        handler = signal.getsignal(signal.SIGINT)
        if handler is self or not callable(handler):
            return False
        try:
            signal.signal(signal.SIGINT, self)
        except ValueError:  # not the main interpreter
            return False
        self._replaced.append(handler)
        return True

    def restore(self) -> None:
        """Put back the handler ``install()`` replaced, unless the code that ran installed its own
        and left it; then deliver a signal held back, to that handler."""
        handler = self._replaced.pop()
        if signal.getsignal(signal.SIGINT) is self:
            signal.signal(signal.SIGINT, handler)
        self._deliver(handler)

    def deliver_if_safe(self, frame: FrameType | None) -> None:
        """A nested dispatcher (one that found the guard installed) returns to ``frame``: deliver a
        signal held back if a KeyboardInterrupt may be raised there (in a task that waited on the
        main thread), else leave it to the outer dispatcher."""
        if self.deferred is not None and self._replaced and may_raise_here(frame):
            self._deliver(self._replaced[-1])

    def _deliver(self, handler: Handler) -> None:
        deferred, self.deferred = self.deferred, None
        if deferred is not None:
            handler(*deferred)  # raises KeyboardInterrupt, usually

    def active(self) -> bool:
        """Whether a guard stands in for the SIGINT handler now. Any thread."""
        return signal.getsignal(signal.SIGINT) is self


GUARD = InterruptGuard()
