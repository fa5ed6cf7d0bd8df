"""``progress()``: progress and cancel for long work, updated from any thread (no bpy).

Counting takes no lock and makes no ``bpy`` call, so workers may count in tight loops:

- ``advance()`` (one step) is one C call, ``next()`` on an ``itertools.count``: atomic under the
  GIL, no lost steps however many threads advance at once;
- ``advance(n)`` adds ``n`` to the calling thread's own entry of a dict keyed by thread id: only that
  thread ever writes that entry, and each dict operation is atomic;
- ``update(done, ...)`` stores one tuple, ``(done, steps, added)``: the counts at that moment, so
  that ``done`` reads as that value plus whatever is advanced after it.

Reading ``done`` adds these up (a few hundred nanoseconds); readers are the display, ≤ 10 times a
second.

Where the progress is shown: in Blender's UI, while the library is registered there, a status-bar
item (``_progress_ui``) that the UI timer redraws from the main thread at most 10 times a second;
elsewhere (``--background``, the bpy wheel, plain Python, the UI without ``register()``) a line on
stderr at most once a second, written by a small thread that runs only while a progress is open
and never touches ``bpy``, plus one line when each progress ends.
"""

from __future__ import annotations

import itertools
import math
import numbers
import sys
import threading
from _thread import get_ident
from operator import attrgetter
from time import monotonic
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from . import _threads
from ._wake import Source, add_source, remove_source

__all__ = ("Progress", "progress")

#: Headless: seconds between two stderr lines (a line is written only when something changed).
PRINT_INTERVAL = 1.0

_registry_lock = threading.Lock()  # must be held while changing _active, _display or _printer
_active: list[Progress] = []  # open progresses, oldest first; replaced only under the lock
_serials = itertools.count(1)
#: The UI display (a source for the scheduler: ``_progress_ui.StatusBar``) while the library is
#: registered in Blender's UI, else None: progresses then go to stderr.
_display: Source | None = None
_printer: threading.Thread | None = None
_printer_wake = threading.Event()
_print_lock = threading.Lock()  # one line at a time; must be held while writing a line or closing
_stderr: IO[str] | None = None  # tests replace it; None: sys.stderr at the time of writing


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


_C = TypeVar("_C", bound=_Cancellable)


def _number(value: Any, what: str, allow_none: bool = False) -> Any:
    # Returns ``value`` itself once checked: a finite int or float (None if allowed).
    kind = type(value)
    if kind is int or (kind is float and value - value == 0.0):  # the usual cases, fast (inf - inf is nan)
        return value
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or math.isinf(value):
        expected = "a finite number or None" if allow_none else "a finite number"
        raise TypeError(f"{what} must be {expected}, got {value!r}")
    return value


def _label(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"progress label must be a string, got {value!r}")
    return value


def _total(value: object) -> float | None:
    total: float | None = _number(value, "progress total", allow_none=True)
    if total is not None and total < 0:
        raise ValueError(f"progress total must be >= 0 or None, got {value!r}")
    return total


class Progress:
    """Progress and cancellation of one piece of long work, from ``progress()``. Any thread.

    Workers call ``advance()``/``update()`` as often as they like (no lock, no ``bpy``) and check
    ``cancelled`` to stop early. The display (Blender's status bar, or stderr headless) reads it by
    itself. Use it as a context manager, or call ``close()`` when the work ends.
    """

    __slots__ = (
        "_serial",
        "_started",
        "_label",
        "_total",
        "_steps",
        "_step",
        "_added",
        "_origin",
        "_cancelled",
        "_futures",
        "_closed",
        "_ended",
        "_outcome",
        "_printed",
    )

    def __init__(self, label: str, total: float | None = None) -> None:
        self._serial = next(_serials)  # unique per process: the status bar's cancel button names it
        self._started = monotonic()
        self._label = _label(label)
        self._total = _total(total)
        self._steps = itertools.count()  # advance(): one C call, atomic
        self._step = self._steps.__next__
        self._added: dict[int, float] = {}  # advance(n): thread id -> sum, written by that thread only
        self._origin: tuple[float, int, float] = (0, 0, 0)  # (done, steps, added) at the latest update()
        self._cancelled = False
        self._futures: list[_Cancellable] = []
        self._closed = False
        self._ended = 0.0
        self._outcome = ""
        self._printed: tuple[str, str, bool] | None = None  # what the last stderr line showed of it

    # -- the hot path: any thread, no lock ----------------------------------------------------------

    def advance(self, n: float = 1) -> None:
        """Count ``n`` more units done (default 1). Any thread; takes no lock, calls no ``bpy``."""
        if n == 1:
            self._step()
        else:
            added = self._added
            key = get_ident()
            added[key] = added.get(key, 0) + n

    def update(self, done: float, total: float | None = None, label: str | None = None) -> None:
        """Set how much is done (and optionally the total and the label). Any thread; no lock.

        ``advance()`` calls that race with it from other threads count before or after it.

        Raises:
            TypeError: ``done``/``total`` is not a finite number, ``label`` not a string.
            ValueError: ``total`` is negative.
        """
        done = _number(done, "progress done")
        if total is not None:
            self._total = _total(total)
        if label is not None:
            self._label = _label(label)
        self._origin = (done, *self._counts())

    if TYPE_CHECKING:  # mypy types a property only in its decorator form: a bool, not Any

        @property
        def cancelled(self) -> bool:
            """True once the work was asked to stop: by ``cancel()``, the status bar's cancel button
            or ESC in Blender, or an exception leaving the ``with`` block. Any thread; workers check
            it and stop early."""

    else:  # attrgetter: a getter without a Python frame, workers read it in tight loops
        cancelled = property(
            attrgetter("_cancelled"),
            doc=(
                "True once the work was asked to stop: by ``cancel()``, the status bar's cancel button or ESC "
                "in Blender, or an exception leaving the ``with`` block. Any thread; workers check it and stop "
                "early."
            ),
        )

    def cancel(self) -> None:
        """Ask the work to stop: ``cancelled`` becomes True and every attached Future that has not
        started is cancelled. Any thread; idempotent."""
        self._cancelled = True
        for future in list(self._futures):
            future.cancel()

    def attach(self, future: _C) -> _C:
        """Cancel ``future`` when this progress is cancelled (at once if it already is); return it.

        Any thread. For the Futures of ``run_on_main``, ``concurrent.futures`` executors and the
        like: ``progress.attach(run_on_main(fn))``. Attached Futures are kept until ``close()``.

        Raises:
            TypeError: ``future`` has no ``cancel()`` method.
        """
        if not callable(getattr(future, "cancel", None)):
            raise TypeError(f"Progress.attach() takes a Future (an object with cancel()), got {future!r}")
        self._futures.append(future)
        if self._cancelled:
            future.cancel()
        return future

    # -- reading ------------------------------------------------------------------------------------

    def _counts(self) -> tuple[int, float]:
        steps = int(repr(self._steps)[6:-1])  # "count(N)": N steps so far; reading it does not step
        added = self._added
        return steps, (sum(added.copy().values()) if added else 0)

    @property
    def done(self) -> float:
        """How much is done: the latest ``update()`` plus what was advanced since. Any thread."""
        origin = self._origin
        steps, added = self._counts()
        return origin[0] + (steps - origin[1]) + (added - origin[2])

    @property
    def total(self) -> float | None:
        """The total given to ``progress()``/``update()``, or None (then no percentage is shown)."""
        return self._total

    @property
    def label(self) -> str:
        """What the work is called, as shown ("Downloading"); ``update(label=...)`` changes it."""
        return self._label

    @property
    def closed(self) -> bool:
        """True after ``close()`` (or the end of the ``with`` block)."""
        return self._closed

    def fraction(self) -> float | None:
        """``done / total`` clamped to 0..1, or None without a (positive) total. Any thread."""
        total = self._total
        if not total:
            return None
        return min(1.0, max(0.0, self.done / total))

    def text(self) -> str:
        """What the displays show: ``"12/40 30%"``, or ``"12"`` without a total."""
        done = self.done
        fraction = self.fraction()
        total = self._total
        if fraction is None or total is None:
            return _amount(done)
        return f"{_amount(done)}/{_amount(total)} {int(fraction * 100)}%"

    # -- ending -------------------------------------------------------------------------------------

    def close(self) -> None:
        """End the progress: it leaves the display (headless: one last line). Any thread; idempotent.

        Attached Futures are released (not cancelled).
        """
        self._end("")

    def _end(self, outcome: str) -> None:
        with _registry_lock:
            if self._closed:
                return
            self._closed = True
            self._ended = monotonic()
            self._outcome = outcome or ("cancelled" if self._cancelled else "done")
            _active.remove(self)
            headless = _display is None
            if not _active:
                _printer_wake.set()  # the printer thread ends now instead of at its next line
        self._futures = []
        if headless:
            _write_line(self._final_line())

    def _final_line(self) -> str:
        seconds = self._ended - self._started
        outcome = self._outcome
        if outcome == "done":
            return f"{self._label}: done, {self.text()} in {seconds:.1f} s"
        return f"{self._label}: {outcome} at {self.text()} after {seconds:.1f} s"

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self._end("")
        else:
            # The block failed: whatever it queued and attached is of no use any more.
            self.cancel()
            self._end(f"failed ({exc_type.__name__})")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "cancelled" if self._cancelled else "open"
        return f"<Progress {self._label!r} {self.text()} {state}>"


def _amount(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.1f}"


def progress(label: str, total: float | None = None) -> Progress:
    """Start showing the progress of a piece of work; returns its ``Progress``. Any thread.

    In Blender's UI (the library registered there) a status-bar item shows the label, the count
    and the percentage, with a cancel button; ESC over Blender cancels the newest progress.
    Elsewhere a line goes to stderr at most once a second while it changes, and one when it ends:

        with progress("Downloading", total=len(urls)) as p:   # in a worker thread
            for url in urls:
                if p.cancelled:
                    break
                fetch(url)
                p.advance()

    Raises:
        TypeError: ``label`` is not a string, ``total`` not a finite number or None.
        ValueError: ``total`` is negative.
    """
    created = Progress(label, total)
    with _registry_lock:
        _active.append(created)
        if _display is not None:
            add_source(_display)
        else:
            _ensure_printer()
    return created


# -- what the displays read ---------------------------------------------------------------------


def open_progresses() -> tuple[Progress, ...]:
    """The open progresses, oldest first. Any thread."""
    return tuple(_active)


def find(serial: int) -> Progress | None:
    """The open progress with this serial number; with 0, the newest one not cancelled yet."""
    for item in reversed(_active):
        if (item._serial == serial) if serial else not item._cancelled:
            return item
    return None


def set_display(display: Source | None) -> None:
    """Show progresses with ``display`` (Blender's UI), or on stderr with None. Main thread."""
    global _display
    with _registry_lock:
        _display = display
        if display is not None:
            if _active:
                add_source(display)
        elif _active:
            _ensure_printer()


def remove_display_if_idle(display: Source) -> bool:
    """Stop polling ``display`` when no progress is open; True if it was removed. Main thread.

    Under the registry lock, so that a progress opened meanwhile adds it back after, not before."""
    with _registry_lock:
        if _active:
            return False
        remove_source(display)
        return True


# -- headless: stderr -----------------------------------------------------------------------------


def _write_line(line: str) -> None:
    with _print_lock:
        stream = _stderr or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or missing stderr: nothing to show on
            pass


def _ensure_printer() -> None:
    # Called with _registry_lock held.
    global _printer
    if _printer is None and not _exiting:
        _printer_wake.clear()
        _printer = threading.Thread(target=_print_while_open, name="mainthread_tasks-progress", daemon=True)
        # A progress opened inside a joined_threads block may outlive it: the block must not wait.
        _threads.unowned(_printer).start()
        _register_exit_hook()


def _print_while_open() -> None:
    """The printer thread: every PRINT_INTERVAL, one line with the open progresses if any changed."""
    global _printer
    last_line = monotonic()
    while True:
        _printer_wake.wait(max(0.0, last_line + PRINT_INTERVAL - monotonic()))
        with _registry_lock:
            if not _active or _display is not None or _exiting:
                _printer = None
                return
            _printer_wake.clear()
            items = list(_active)
        now = monotonic()
        if now - last_line < PRINT_INTERVAL:
            continue
        parts = []
        changed = False
        with _print_lock:
            for item in items:
                if item._closed or now - item._started < PRINT_INTERVAL:
                    continue
                shown = (item._label, item.text(), item._cancelled)
                changed |= shown != item._printed
                item._printed = shown
                parts.append(f"{shown[0]}: {shown[1]}" + (" (cancelling)" if shown[2] else ""))
        if changed:  # one line with every progress, when any of them moved
            last_line = now
            _write_line(" | ".join(parts))


_exiting = False
_exit_hook_registered = False


def _register_exit_hook() -> None:
    global _exit_hook_registered
    if _exit_hook_registered:
        return
    _exit_hook_registered = True
    try:
        threading._register_atexit(_stop_printer_at_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # pragma: no cover - Python < 3.9 or already exiting
        pass


def _stop_printer_at_exit() -> None:
    # Before Python joins threads at exit: the daemon printer ends instead of being frozen mid-line.
    global _exiting
    _exiting = True
    _printer_wake.set()
    printer = _printer
    if printer is not None and printer is not threading.current_thread():
        printer.join(1.0)
