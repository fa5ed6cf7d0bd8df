"""A local pool: worker processes on this machine, read by the main thread (no bpy, no thread).

- Each worker process runs ``_process_child.py`` (by path: never the parent's ``__main__``) with an
  interpreter of Blender's Python version (``_interpreter``). Tasks go down one pipe and results
  come back up another (``_pipes``), as length-prefixed pickles (the format is in
  ``_wire``); the child's stdout and stderr stay Blender's, for prints.
- One task is in flight per child; tasks wait in ``LocalPool._pending`` for a free child. Children
  start lazily, one per task in flight, up to the pool's size, and stay until the pool stops (or it
  shrinks).
- A child's death fails only its task (ProcessDied). The main thread sees it as end-of-file on the
  result pipe and, should a process the task started hold that pipe open, by watching the process
  itself (``_pipes.process_exit_fd``: a pidfd, else ``Popen.poll`` while a task runs). The child
  keeps its pipes out of what its tasks start (``_process_child._keep_pipes_to_ourselves``). A reply
  that is not a well-formed reply to the task in flight (a stray write into the pipe, sizes over
  the limits) fails that task the same way and the child is replaced: no result reaches another
  task's Future.
- The pool is a *source* of the scheduler (``_wake.Source``): the main thread reads the children's
  result pipes without blocking wherever it runs queued tasks (``_dispatch`` says where) and
  completes the futures there, so done-callbacks run on the main thread. No thread is started.
- Every file descriptor is touched by the main thread only: it starts children, writes tasks, reads
  results, and stops them. Another thread that submits appends to ``_pending`` (under the pool's
  lock) and wakes the main thread, which dispatches the task at its next poll. A task is written
  only to an idle child, which is reading, so the write never waits for a busy child.
- The pool stops at the last ``unregister()`` and at interpreter exit (``stop``), or once drained
  after ``ProcessPool.shutdown()``: children are terminated (killed if they do not end within half
  a second) and waited for, and the futures of unfinished tasks fail with SchedulerStopped.
  Workers end with Blender even when it dies in the middle of their task: a Job Object on Windows
  (``_windows``), PR_SET_PDEATHSIG on Linux (``_process_child._end_with_parent``).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from time import perf_counter

from . import _errors, _pipes, _process_child, _wire
from ._calls import limits
from ._errors import SchedulerStopped
from ._tasks import COUNTS, Task, complete, fail
from ._threadinfo import is_main_thread
from ._wake import remove_source, wake_main

__all__ = ("EXIT_CHECK_INTERVAL", "STOP_GRACE", "LocalPool", "SHUT_DOWN")

#: How long ``stop`` lets children end after SIGTERM (or end-of-file, when idle) before SIGKILL.
STOP_GRACE = 0.5
#: How often the main thread asks whether a busy process has ended, where the system gives no file
#: descriptor to watch for that (see ``_pipes.process_exit_fd``).
EXIT_CHECK_INTERVAL = 0.1
#: What ``submit`` raises once the pool's executor was shut down (as CPython's executors say it).
SHUT_DOWN = "cannot schedule new futures after shutdown"

CHILD_SCRIPT = os.path.abspath(_process_child.__file__)


class _Numbers:
    """The numbers tasks carry to their process and back (one sequence for every pool: a reply
    names its task alone). Main thread only."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


NUMBERS = _Numbers()


class _Child:
    """One worker process and the parent's ends of its pipes. Main thread only."""

    __slots__ = ("proc", "task_fd", "reader", "exit_fd", "task", "quiet", "sys_path")

    def __init__(self, proc: subprocess.Popen[bytes], task_fd: int, result_fd: int) -> None:
        self.proc = proc
        self.task_fd = task_fd
        self.reader = _pipes.Reader(result_fd)
        self.exit_fd = _pipes.process_exit_fd(
            proc
        )  # readable once the process has ended, if the system has such a thing
        self.task: Task | None = None  # the Task in flight
        self.quiet = 0  # polls since the task went out that read nothing from it
        self.sys_path: list[str] | None = None  # the sys.path it was sent last

    def close(self) -> None:
        _pipes.close_fds(self.task_fd, self.reader.fd, self.exit_fd)
        self.task_fd = self.reader.fd = -1
        self.exit_fd = None


class Intake:
    """How a pool of either kind (``LocalPool``, ``_cluster.ClusterPool``) takes tasks: any thread
    queues one in ``_pending`` under ``_lock``, refused once the pool is stopped or shut down, and
    the main thread starts what waits (``_start_pending``: at once when it submits, else when woken).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # must be held while touching _pending, _closed or _draining
        self._pending: deque[Task] = deque()  # any thread appends; the main thread takes
        self._closed: str | None = None  # SchedulerStopped's message, once stopped
        self._draining = False  # shut down: takes no more tasks, stops once idle
        self.ended = threading.Event()  # set once stopped and all it started waited for

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def submit(self, task: Task) -> None:
        """Queue ``task``; start it now if called on the main thread. Any thread.

        Raises:
            SchedulerStopped: the pool was stopped. RuntimeError: it is shut down.
        """
        with self._lock:
            if self._closed is not None:
                raise SchedulerStopped(self._closed)
            if self._draining:
                raise RuntimeError(SHUT_DOWN)
            self._pending.append(task)
            COUNTS.add(submitted=1)
        self._accepted(task)
        if is_main_thread():
            self._start_pending()
        else:
            wake_main()

    def dispatch(self) -> None:
        """Start waiting tasks now (``set_process_workers`` on the main thread). Main thread."""
        if self._closed is None:
            self._start_pending()

    def _accepted(self, task: Task) -> None:
        """Called in the submitting thread once ``task`` is queued."""

    def _start_pending(self) -> None:
        raise NotImplementedError


class LocalPool(Intake):
    """The worker processes of one ``ProcessPool`` and their tasks; a source (see ``_wake.Source``).

    ``size()`` says how many processes it may run (read at each dispatch: ``set_process_workers``
    changes the shared pool's); ``python`` is their interpreter.
    """

    def __init__(self, size: Callable[[], int], python: str) -> None:
        super().__init__()
        self._size = size
        self._python = python
        # Main thread only:
        self._children: list[_Child] = []  # alive
        self._idle: list[_Child] = []
        self._busy: list[_Child] = []  # with a task in flight
        self._ending: list[subprocess.Popen[bytes]] = []  # retired children not yet waited for
        COUNTS.track(self)

    # -- any thread ---------------------------------------------------------------------------

    def drain(self, cancel_pending: bool) -> None:
        """Take no more tasks and stop once the ones accepted are done (``ProcessPool.shutdown``);
        with ``cancel_pending``, cancel those no process has started. Any thread."""
        with self._lock:
            self._draining = True
            waiting = list(self._pending) if cancel_pending else []
        for task in waiting:
            task.future.cancel()  # (a process that took it meanwhile keeps it: cancel() says False)
        wake_main()

    def counts(self) -> tuple[int, int, int]:
        """``(processes alive, tasks pending, tasks running)``. Any thread (a snapshot)."""
        return len(self._children), len(self._pending), len(self._busy)

    def pids(self) -> list[int]:
        """The worker processes' ids. Any thread (a snapshot)."""
        return [child.proc.pid for child in list(self._children)]

    # -- the source interface: main thread -------------------------------------------------------

    def fds(self) -> list[int]:
        fds = []
        for child in self._busy:
            fds.append(child.reader.fd)
            if child.exit_fd is not None:
                fds.append(child.exit_fd)
        return fds

    def busy(self) -> bool:
        return bool(self._busy or self._pending)

    def due(self) -> float | None:
        if self._pending and (self._idle or len(self._children) < self._size()):
            return 0.0  # submitted from another thread: the main thread dispatches it
        if self._draining and not self._busy:
            return 0.0  # shut down and idle: stop now
        if self._ending or (self._idle and len(self._children) > self._size()):
            return 0.01  # children to retire or wait for
        for child in self._busy:
            if child.exit_fd is None:
                return EXIT_CHECK_INTERVAL  # no fd tells when it ends: ask (see _pipes.process_exit_fd)
        return None

    def poll(self, deadline: float | None = None) -> int:
        """Read what the children sent; finish those futures; dispatch waiting tasks. Main thread."""
        if not (self._busy or self._pending or self._ending or self._draining or len(self._children) > self._size()):
            return 0
        done = 0
        for child in list(self._busy):
            if self._closed is not None or (deadline is not None and perf_counter() > deadline):
                break
            if child.task is None:  # finished by a nested poll (a done-callback waited on a future)
                continue
            if self._collect(child, deadline):
                done += 1
                continue
            # Nothing came. The process may have ended with its result pipe still open (something it
            # started holds it): no end-of-file then, so ask. Not on the first quiet poll after the
            # task went out, the usual wait for a reply (it saves a system call per task): its exit
            # fd wakes the main thread for another poll at once (where it has none, due() does).
            child.quiet += 1
            if child.quiet > 1 and child.proc.poll() is not None:
                self._collect(child, None, ended=True)
                done += 1
        if self._closed is None:
            self._start_pending()
            if self._draining and not self._busy and not self._pending:
                remove_source(self)
                self.stop("the ProcessPool was shut down")
        return done

    def stop(self, message: str) -> None:
        """Stop for good: end every child, fail unfinished futures with SchedulerStopped(message).

        Called by the scheduler at the last unregister() and at exit. Returns within about a second
        (``2 * STOP_GRACE``): children that ignore SIGTERM are killed.
        """
        with self._lock:
            if self._closed is not None:
                return
            self._closed = message
            pending = list(self._pending)
            self._pending.clear()
        COUNTS.forget(self)
        children, self._children, self._idle, self._busy = self._children, [], [], []
        running = [child.task for child in children if child.task is not None]
        for child in children:
            os.close(child.task_fd)  # an idle child ends at end-of-file
            child.task_fd = -1
            if child.task is not None and child.proc.poll() is None:
                child.proc.terminate()
            child.task = None
        _pipes.end_processes([*(child.proc for child in children), *self._ending], STOP_GRACE)
        self._ending = []
        for child in children:
            child.close()
        self.ended.set()
        stopped_running = stopped_pending = 0
        for task in running + pending:
            if task.started:
                stopped_running += 1
            else:
                stopped_pending += 1  # (or cancelled while it waited: counted now)
            if task.future.cancelled():
                continue
            try:
                task.future.set_exception(SchedulerStopped(message))
            except InvalidStateError:
                pass
        COUNTS.add(failed=stopped_running, cancelled=stopped_pending)

    # -- main thread: children ------------------------------------------------------------------

    def _start_child(self) -> _Child:
        proc, task_fd, result_fd = _pipes.start([self._python, "-I", CHILD_SCRIPT])
        child = _Child(proc, task_fd, result_fd)
        self._children.append(child)
        return child

    def _next_task(self) -> Task | None:
        """The oldest pending task that was not cancelled, now RUNNING; None if there is none."""
        while True:
            with self._lock:
                if not self._pending:
                    return None
                task = self._pending.popleft()
            if task.started or task.future.set_running_or_notify_cancel():
                task.started = True
                return task
            COUNTS.add(cancelled=1)

    def _start_pending(self) -> None:
        """Give waiting tasks to idle children, starting children up to the pool's size.

        Idle children beyond the size (``set_process_workers`` shrank it) end first: they take no
        waiting task.
        """
        self._end_retired()
        while self._pending and self._closed is None:
            child = self._usable_idle_child()
            if child is None and len(self._children) >= self._size():
                return
            task = self._next_task()
            if task is None:
                if child is not None:
                    self._idle.append(child)
                return
            try:
                child = child or self._start_child()
            except Exception as exc:  # noqa: BLE001 - e.g. too many open files
                fail(task, _errors.process_died()(f"could not start a worker process for {task.name}: {exc}"), exc)
                continue
            self._send(child, task)

    def _usable_idle_child(self) -> _Child | None:
        """The most recently used idle child (warm caches) whose process runs; None if there is none.

        One that ended while idle is dropped here: if something its last task started still holds
        its task pipe, a task written there would wait unread (without, the write fails and the
        task goes to another child, see _send).
        """
        while self._idle:
            child = self._idle.pop()
            if child.proc.poll() is None:
                return child
            self._remove(child, ended=True)
        return None

    def _send(self, child: _Child, task: Task) -> None:
        sys_path = list(sys.path)
        task.number = NUMBERS.next()
        header = pickle.dumps(
            (task.number, None if sys_path == child.sys_path else sys_path, task.packages, limits.max_message_bytes),
            _wire.PROTOCOL,
        )
        child.task, child.quiet = task, 0
        self._busy.append(child)
        try:
            _wire.write_message(child.task_fd, header, task.body)  # type: ignore[arg-type]  # not sent yet: has its body
        except OSError:
            # The child is gone (it died while idle, or while reading this task): the task never
            # started there. Try once more in another child; a second loss fails it.
            child.task = None
            self._busy.remove(child)
            self._remove(child, ended=True)
            if task.sent_once:
                fail(
                    task,
                    _errors.process_died()(
                        f"worker processes died twice before they could read {task.name}; see their output above"
                    ),
                )
            else:
                task.sent_once = True
                with self._lock:
                    self._pending.appendleft(task)
            return
        child.sys_path = sys_path
        task.body = None  # the child has it

    def _remove(self, child: _Child, ended: bool) -> None:
        """Forget ``child`` and close its pipes; ``ended``: it is known to be ending (wait for it)."""
        self._children.remove(child)
        if child in self._idle:
            self._idle.remove(child)
        child.close()
        if ended:
            _pipes.end_processes([child.proc], 0.2)
        else:
            self._ending.append(child.proc)

    def _end_retired(self) -> None:
        # Shrunk by set_process_workers: idle children beyond the size end (busy ones finish first).
        # Oldest first: the most recently used stay.
        while self._idle and len(self._children) > self._size():
            self._remove(self._idle.pop(0), ended=False)  # end-of-file on its task pipe: it exits
        if self._ending:
            self._ending = [proc for proc in self._ending if proc.poll() is None]

    # -- main thread: results -------------------------------------------------------------------

    def _collect(self, child: _Child, deadline: float | None, ended: bool = False) -> bool:
        """Read from busy ``child``; finish its task if its reply is complete or it is lost.

        Returns True if the task is finished. ``ended``: the process is known to have ended, so
        what it wrote is all there is.
        """
        try:
            message = child.reader.receive(deadline, limits.max_message_bytes)
            if message is not None and child.reader.leftover:  # a child writes nothing but its one reply
                raise _wire.BadMessage(f"{len(child.reader.leftover):,} bytes more than its reply")
        except _wire.BadMessage as exc:
            self._lose(child, str(exc))
            return True
        if message is None:
            if not ended:
                return False
            message = _pipes.DIED
        if message is _pipes.DIED:
            self._lose(child)
        else:
            self._finish(child, message)
        return True

    def _finish(self, child: _Child, message: bytearray) -> None:
        task = child.task
        assert task is not None, "only a busy child has a reply"
        view = memoryview(message)
        try:
            size = _wire.PREFIX.size
            _, header_size, _ = _wire.PREFIX.unpack_from(view)  # (receive checked it)
            try:
                number, failure = _wire.parse_reply_header(view[size : size + header_size])
            except _wire.BadMessage as exc:
                self._lose(child, str(exc))
                return
            if number != task.number:
                self._lose(child, f"the reply of task {number}, not of task {task.number}")
                return
            # A whole, well-formed reply to this very task: the child is idle again.
            child.task = None
            self._busy.remove(child)
            self._idle.append(child)
            complete(task, failure, view[size + header_size :])
        finally:
            view.release()

    def _lose(self, child: _Child, broken: str | None = None) -> None:
        """``child`` died (``broken`` is None) or sent what is no reply to its task (``broken`` says
        what): end the process, forget it, fail its task with ProcessDied."""
        task, child.task = child.task, None
        assert task is not None, "only a busy child is watched"
        self._busy.remove(child)
        if broken is not None:
            child.proc.kill()
        self._remove(child, ended=True)
        if broken is None:
            how = f"died: {_pipes.exit_description(child.proc.returncode)}"
        else:
            how = f"sent a reply that cannot be read ({broken}), so it was ended"
        fail(
            task,
            _errors.process_died()(
                f"the worker process (pid {child.proc.pid}) running {task.name} {how}. Only this task is lost; "
                "a new worker process takes the next task"
            ),
        )
