"""Waking the main thread: the other sources of main-thread work, and how it sleeps (no bpy).

Process results and the asyncio loop's steps also run on the main thread, with no helper thread:
they plug in as *sources* (``Source``), polled wherever queued tasks run. When the main thread has
nothing to run, it sleeps in ``WAKER.sleep()``; submitters and sources wake it with ``wake_main()``.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import sys
import threading
from _thread import allocate_lock
from collections.abc import Sequence
from typing import Any, Protocol

from . import _queue
from ._interrupts import dispatcher, interruptible

__all__ = ("SOURCES", "WAKER", "Source", "add_source", "remove_source", "wake_main")

logger = logging.getLogger("mainthread_tasks")


class Source(Protocol):
    """What ``add_source`` takes: another kind of main-thread work.

    - ``fds()``: file descriptors that turn readable when ``poll()`` has work (main thread);
    - ``due()``: seconds until ``poll()`` has work without fd activity (0.0: now), or None;
    - ``busy()``: True while work is in flight (the UI timer then runs every pass);
    - ``poll(deadline=None)``: main thread only; does what is ready without blocking, starting
      nothing once ``time.perf_counter()`` is past ``deadline``; returns how much work completed;
    - ``stop(message)``: at the last ``unregister()`` and at exit; fails what is pending with
      ``SchedulerStopped(message)``, frees OS resources, never blocks long. It may add itself back
      (to finish the stop later, on the main thread).
    """

    def fds(self) -> Sequence[int]: ...
    def due(self) -> float | None: ...
    def busy(self) -> bool: ...
    def poll(self, deadline: float | None = None) -> int: ...
    def stop(self, message: str) -> None: ...


class Sources:
    """The sources the main thread polls. Any thread adds and removes; the main thread polls."""

    __slots__ = ("all", "_lock")

    def __init__(self) -> None:
        self.all: tuple[Source, ...] = ()  # replaced, never mutated: readers need no lock
        self._lock = threading.Lock()  # must be held while replacing self.all

    def add(self, source: Source) -> None:
        """Let the main thread poll ``source`` wherever it runs tasks. Any thread."""
        with self._lock:
            if not any(s is source for s in self.all):
                self.all = (*self.all, source)
        WAKER.ring()

    def remove(self, source: Source) -> None:
        """Stop polling ``source``; harmless if it is not added. Any thread."""
        with self._lock:
            self.all = tuple(s for s in self.all if s is not source)

    @dispatcher
    def poll(self, deadline: float | None = None) -> int:
        """Poll every source (see ``Source.poll``); returns the work done. Main thread.

        A source's own failure is a bug of ours: logged, never stopping the dispatcher. Sources run
        no user task directly (done-callbacks aside): a Ctrl-C is held back meanwhile.
        """
        done = 0
        for source in self.all:
            try:
                done += source.poll(deadline)
            except Exception:
                logger.exception("mainthread_tasks: polling %r failed", source)
        return done

    def due(self) -> float | None:
        """The UI timer's question: 0.0 when a source is busy, else the soonest due(), else None."""
        soonest = None
        for source in self.all:
            if source.busy():
                return 0.0
            due = source.due()
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        return soonest

    def ready(self) -> bool:
        """Whether a source has work now without fd activity."""
        for source in self.all:
            due = source.due()
            if due is not None and due <= 0.0:
                return True
        return False

    def stop(self, message: str) -> None:
        """Stop every source (the last ``unregister()``, exit). Any thread.

        Takes the list first: a source may add itself back to finish its stop later.
        """
        with self._lock:
            stopping, self.all = self.all, ()
        for source in stopping:
            try:
                source.stop(message)
            except Exception:
                logger.exception("mainthread_tasks: stopping %r failed", source)


# How the main thread sleeps in Waker.sleep, by what it waits on:
_AWAKE = 0
_ON_DOORBELL = 1  # no source: a lock kept locked; ringing releases it
_ON_SOCKET = 2  # sources: poll(2) on their fds plus a wake socket; ringing writes a byte to it
# Where poll(2) is missing (Windows), the sleep looks at the sources' due times and the queue in
# slices of this length, on the wake socket alone (pipes are not selectable there).
SLICE_WITHOUT_POLL = 0.01


class Waker:
    """How the main thread sleeps when it has nothing to run, and how other threads wake it.

    Submitters and ``ring()`` ring only while ``asleep`` says the main thread sleeps (it is raised
    before the queue is checked a last time, so a task queued at any moment is either seen or
    rings). With no source the main thread sleeps on a doorbell: no syscall unless it really waits
    on it, the cost of ``SimpleQueue.get``'s own wake-up.
    """

    __slots__ = ("asleep", "_doorbell", "_sockets")

    def __init__(self) -> None:
        self.asleep = _AWAKE  #: what the main thread sleeps on now; read by every submitter
        self._doorbell = allocate_lock()
        self._doorbell.acquire()
        self._sockets: tuple[socket.socket, socket.socket] | None = None  # (read, write), made on first use

    def ring(self) -> None:
        """Wake the main thread if it sleeps in ``pump()`` waiting for work. Any thread.

        That ``pump()`` then returns (0 if nothing was ready), so a caller looping on it looks at
        its own condition again. Costs one attribute read when the main thread does not sleep.
        """
        asleep = self.asleep
        if not asleep:
            return
        self.asleep = _AWAKE  # one ring wakes it: the threads submitting after this one need not ring
        if asleep == _ON_DOORBELL:
            try:
                self._doorbell.release()
            except RuntimeError:  # rung already, by a thread that read the flag at the same time
                pass
        elif self._sockets is not None:
            try:
                self._sockets[1].send(b"\0")
            except OSError:  # full: a wake-up is pending anyway; closed: exiting
                pass

    @interruptible
    def sleep(self, wait: float | None) -> bool:
        """Sleep until a task is queued, a source's fd is readable or due, ``ring()`` is called, or
        ``wait`` s have passed. Returns True if something rang (rather than the time running out).

        Main thread, holding no task: Ctrl-C here interrupts at once.
        """
        sources = SOURCES.all
        if not sources:
            self.asleep = _ON_DOORBELL
            try:
                if _queue.qsize():  # queued before the flag went up
                    return True
                return self._doorbell.acquire(True, -1 if wait is None else wait)
            finally:
                self.asleep = _AWAKE
        wake = self._wake_socket()
        fds = [wake.fileno()]
        for source in sources:
            fds.extend(source.fds())
            due = source.due()
            if due is not None and (wait is None or due < wait):
                wait = max(due, 0.0)
        poller: Any = None
        if sys.platform != "win32":  # poll(2), which Windows lacks
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
        elif wait is None or wait > SLICE_WITHOUT_POLL:
            wait = SLICE_WITHOUT_POLL
        # A ring that the last check below answered last time left its byte: drained before the
        # flag goes up, or this sleep would end at once.
        self._drain(wake)
        self.asleep = _ON_SOCKET
        ready: list[int] = []
        try:
            # Re-checked after raising the flag: a put, or work a source got from another thread
            # (whose ring() found the flag down), before it is seen here.
            if _queue.qsize() or SOURCES.ready():
                return True
            if poller is not None:
                ready = [fd for fd, _event in poller.poll(None if wait is None else math.ceil(wait * 1000))]
            else:  # pragma: no cover - Windows
                ready = [sock.fileno() for sock in select.select([wake], [], [], wait)[0]]
        finally:
            self.asleep = _AWAKE
        if wake.fileno() in ready:
            self._drain(wake)
            return True
        return bool(ready)

    def _wake_socket(self) -> socket.socket:
        if self._sockets is None:
            read_end, write_end = socket.socketpair()
            read_end.setblocking(False)
            write_end.setblocking(False)
            self._sockets = (read_end, write_end)
        return self._sockets[0]

    @staticmethod
    def _drain(wake: socket.socket) -> None:
        try:
            while wake.recv(4096):
                pass
        except OSError:  # nothing (more) to read
            pass

    def close(self) -> None:
        """Close the wake socket (at exit); it is made again if somebody sleeps later."""
        sockets, self._sockets = self._sockets, None
        if sockets is not None:
            for sock in sockets:
                sock.close()


SOURCES = Sources()
WAKER = Waker()

#: The package's names for the two things other modules do most (any thread).
add_source = SOURCES.add
remove_source = SOURCES.remove
wake_main = WAKER.ring
