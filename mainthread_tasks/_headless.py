"""``run_forever``: keep a headless Blender serving (queued tasks, process results, coroutines)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures

from . import _blender
from ._dispatch import pump
from ._errors import NotMainThreadError
from ._threadinfo import is_main_thread
from ._wake import wake_main

__all__ = ("run_forever",)

# How often run_forever looks at an ``until`` that cannot wake it (an Event, a callable).
UNTIL_POLL_SECONDS = 0.05

#: What ``until`` may be.
Until = Union[threading.Event, "concurrent.futures.Future[Any]", "asyncio.Future[Any]", Callable[[], object], None]


def _until_check(until: Any) -> tuple[Callable[[], bool], bool]:
    # Any: a Future is anything with done() and add_done_callback(), duck-typed.
    """``until`` as a no-argument function that says whether to stop, plus whether it can wake us."""
    if until is None:
        return (lambda: False), True
    if isinstance(until, threading.Event):
        return until.is_set, False
    done = getattr(until, "done", None)
    if callable(done) and callable(getattr(until, "add_done_callback", None)):
        until.add_done_callback(lambda _future: wake_main())  # concurrent or asyncio Future
        return done, True
    if callable(until):
        return (lambda: bool(until())), False
    raise TypeError(
        f"run_forever(until=...) takes a threading.Event, a Future or a callable returning true to stop, "
        f"got {type(until).__name__}"
    )


def run_forever(until: Until = None) -> None:
    """Run queued tasks, process results and coroutines until ``until`` or SIGINT/SIGTERM. Main thread.

    For headless servers (``blender --background``, the ``bpy`` module), where no Blender timer
    ever fires: an add-on that takes commands on a socket keeps answering while this runs.
    ``until`` is a ``threading.Event`` (stop once set), a Future (``concurrent.futures`` or
    asyncio: stop once done) or a callable (stop once it returns true); ``None`` runs until a
    signal. SIGINT (Ctrl-C) and SIGTERM make it return normally, after the task in hand; their
    previous handlers are back in place afterwards. The Blender binary handles SIGINT in C (the
    first Ctrl-C asks, the second kills Blender): on Linux and macOS that handler is put back too;
    on Windows, where it could not be, run_forever leaves Blender's SIGINT handling alone and
    stops on SIGTERM or ``until`` only. Sleeps when there is nothing to do: no busy polling (an
    Event or a callable is looked at every 50 ms, and on Windows the signals too).

    Raises:
        NotMainThreadError: called from another thread.
        RuntimeError: called in Blender's UI, where the add-on's timer does this work.
        TypeError: ``until`` is none of the above.
    """
    if not is_main_thread():
        raise NotMainThreadError("run_forever() runs main-thread work, so it must be called on the main thread")
    if _blender.in_blender_ui():
        raise RuntimeError(
            "run_forever() is for headless scripts: in Blender's UI the add-on's timer already runs "
            "queued tasks, process results and coroutines; return from your script instead"
        )
    should_stop, wakes = _until_check(until)
    signalled: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signalled.append(signum)
        wake_main()

    previous: dict[signal.Signals, Callable[[], None]] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            restore = _handler_restorer(signum)
            if restore is not None:
                signal.signal(signum, on_signal)
                previous[signum] = restore
        # On Windows a signal handler written in Python runs only once the main thread runs Python
        # code, and a sleeping pump() waits there on a lock that no signal interrupts (Ctrl-C comes
        # in a thread of its own): run_forever would sleep through it. Slices let the handler run.
        slice_seconds = None if wakes and os.name == "posix" else UNTIL_POLL_SECONDS
        while not signalled and not should_stop():
            pump(slice_seconds)
    finally:
        for restore in previous.values():
            restore()


def _handler_restorer(signum: signal.Signals) -> Callable[[], None] | None:
    """A function that puts back ``signum``'s handler of now, or None if it could not be put back
    (then it must not be replaced)."""
    handler = signal.getsignal(signum)
    if handler is not None:

        def put_back() -> None:
            signal.signal(signum, handler)

        return put_back
    # Installed by C code, not through Python (the Blender binary's SIGINT handler): Python cannot
    # give it back. sigaction(2) can: the whole struct is saved as opaque bytes, its layout differs
    # between systems. Python's own record then says SIG_IGN, which no Python code calls.
    if os.name != "posix":
        return None
    try:
        import ctypes

        sigaction = ctypes.CDLL(None, use_errno=True).sigaction
    except (ImportError, OSError, AttributeError):
        return None
    saved = ctypes.create_string_buffer(1024)  # larger than any system's struct sigaction
    if sigaction(int(signum), None, saved) != 0:
        return None

    def restore() -> None:
        signal.signal(signum, signal.SIG_IGN)  # Python's record: never SIG_DFL, not even for a moment
        sigaction(int(signum), saved, None)

    return restore
