"""A cluster pool: tasks sent to a Dask scheduler through a broker process (no bpy, no thread, no dask).

``ProcessPool(cluster=address, python=...)`` runs one. Blender never imports dask: the broker
(``_broker``, started by path with ``python``) holds the Dask client and its threads. The main thread
talks to it over two pipes, exactly as to a local worker (``_pipes``, the format of ``_wire``), and
polls it as a source of the scheduler (``_wake.Source``), so results complete their Futures on the
main thread, done-callbacks included.

- Every task goes to the broker at once (the cluster queues them); its Future stays PENDING until
  its result is back (the scheduler does not tell a client when a task starts). ``cancel()`` works
  until then: a done-callback notes the number (in the cancelling thread) and wakes the main
  thread, which tells the broker, which cancels it on the cluster.
- A task the cluster loses (LOST: its workers died, Dask gave up on it) fails with ProcessDied and
  the reason. When the broker ends -- it lost the scheduler or could not reach it (FATAL), or it
  died -- every task in flight fails with ProcessDied, and the next task starts a new broker.
- ``stop`` (last ``unregister()``, exit) and a drained ``shutdown()`` close the broker's task pipe:
  it cancels what it has on the cluster and ends; one that does not end within ``STOP_GRACE`` s
  is killed (the scheduler then releases the tasks of its lost client itself).
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures import Future, InvalidStateError
from time import perf_counter
from typing import Any

from . import _errors, _pipes, _wire
from ._calls import limits
from ._errors import SchedulerStopped
from ._pool import EXIT_CHECK_INTERVAL, NUMBERS, Intake
from ._tasks import COUNTS, Task, complete, fail
from ._wake import remove_source, wake_main

__all__ = ("STOP_GRACE", "ClusterPool")

#: How long a stopping broker may take to cancel its tasks on the cluster and end before it is killed.
STOP_GRACE = 3.0

BROKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_broker.py")


class _Broker:
    """The broker process and Blender's ends of its pipes. Main thread only."""

    __slots__ = ("proc", "task_fd", "reader", "exit_fd")

    def __init__(self, python: str, address: str) -> None:
        self.proc, self.task_fd, result_fd = _pipes.start([python, "-I", BROKER_SCRIPT, address])
        self.reader = _pipes.Reader(result_fd)
        self.exit_fd = _pipes.process_exit_fd(self.proc)

    def close(self, grace: float) -> None:
        """Close the task pipe (the broker cancels its work on the cluster and ends), wait up to
        ``grace`` s, kill it if it is still there, and close Blender's ends."""
        _pipes.close_fds(self.task_fd)
        self.task_fd = -1
        _pipes.end_processes([self.proc], grace)
        _pipes.close_fds(self.reader.fd, self.exit_fd)
        self.reader.fd = -1
        self.exit_fd = None


class ClusterPool(Intake):
    """The tasks of one cluster ``ProcessPool`` and its broker; a source (see ``_wake.Source``)."""

    def __init__(self, address: str, python: str) -> None:
        super().__init__()
        self._address = address
        self._python = python
        self._cancels: list[Task] = []  # under _lock: cancelled by any thread; the main thread tells the broker
        # Main thread only:
        self._broker: _Broker | None = None
        self._sent: dict[int, Task] = {}  # number -> task, in flight in the broker
        COUNTS.track(self)

    # -- any thread ---------------------------------------------------------------------------

    def _accepted(self, task: Task) -> None:
        task.future.add_done_callback(lambda future: self._on_done(task, future))

    def _on_done(self, task: Task, future: Future[Any]) -> None:
        # In the thread that completed the future: the main thread, or one that cancelled it.
        if future.cancelled():
            with self._lock:
                self._cancels.append(task)
            wake_main()

    def drain(self, cancel_pending: bool) -> None:
        """Take no more tasks and stop once those accepted are done; with ``cancel_pending``,
        cancel every one whose result is not back (on the cluster too). Any thread."""
        with self._lock:
            self._draining = True
        if cancel_pending:
            for task in self._unfinished():
                task.future.cancel()
        wake_main()

    def _unfinished(self) -> list[Task]:
        with self._lock:
            return [*self._pending, *list(self._sent.values())]

    def counts(self) -> tuple[int, int, int]:
        """``(broker processes alive, tasks not yet sent, tasks on the cluster)``. Any thread."""
        return int(self._broker is not None), len(self._pending), len(self._sent)

    def pids(self) -> list[int]:
        broker = self._broker
        return [] if broker is None else [broker.proc.pid]

    # -- the source interface: main thread -------------------------------------------------------

    def fds(self) -> list[int]:
        broker = self._broker
        if broker is None:
            return []
        return [broker.reader.fd] if broker.exit_fd is None else [broker.reader.fd, broker.exit_fd]

    def busy(self) -> bool:
        return bool(self._sent or self._pending)

    def due(self) -> float | None:
        if self._pending or self._cancels or (self._draining and not self._sent):
            return 0.0
        if self._broker is not None and self._broker.exit_fd is None:
            return EXIT_CHECK_INTERVAL  # no fd tells when it ends: ask (see _pipes.process_exit_fd)
        return None

    def poll(self, deadline: float | None = None) -> int:
        """Read what the broker sent; finish those futures; send cancels and new tasks. Main thread."""
        done = 0
        broker = self._broker
        if broker is not None:
            done = self._read(broker, deadline)
        if self._closed is None:
            self._send_cancels()
            self._start_pending()
            if self._draining and not self._sent and not self._pending:
                remove_source(self)
                self.stop("the ProcessPool was shut down")
        return done

    def stop(self, message: str) -> None:
        """Stop for good: end the broker, fail unfinished futures with SchedulerStopped(message)."""
        with self._lock:
            if self._closed is not None:
                return
            self._closed = message
            pending = list(self._pending)
            self._pending.clear()
        COUNTS.forget(self)
        sent, self._sent = list(self._sent.values()), {}
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.close(STOP_GRACE)
        self.ended.set()
        for task in sent + pending:
            if task.future.cancelled():
                continue  # counted by _send_cancels, or now
            try:
                task.future.set_exception(SchedulerStopped(message))
            except InvalidStateError:
                pass
        COUNTS.add(failed=len(sent), cancelled=len(pending))

    # -- main thread --------------------------------------------------------------------------------

    def _start_pending(self) -> None:
        while self._closed is None:
            with self._lock:
                if not self._pending:
                    return
                task = self._pending.popleft()
            if task.future.cancelled():
                COUNTS.add(cancelled=1)
                continue
            if self._broker is None:
                try:
                    self._broker = _Broker(self._python, self._address)
                except Exception as exc:  # noqa: BLE001 - e.g. python= is not a program
                    fail(
                        task, _errors.process_died()(f"could not start the broker process ({self._python}): {exc}"), exc
                    )
                    continue
            task.number = NUMBERS.next()
            header = pickle.dumps(
                ("task", task.number, task.packages, limits.max_message_bytes, task.name), _wire.PROTOCOL
            )
            self._sent[task.number] = task
            try:
                _wire.write_message(self._broker.task_fd, header, task.body)  # type: ignore[arg-type]  # not sent yet
            except OSError:  # the broker is gone: _read finds out and fails what it had (this one too)
                return
            task.body = None

    def _send_cancels(self) -> None:
        with self._lock:
            cancels, self._cancels = self._cancels, []
        for task in cancels:
            if self._sent.pop(task.number, None) is None:
                continue  # not sent (_start_pending counts it), or its reply came first
            COUNTS.add(cancelled=1)
            if self._broker is not None:
                try:
                    _wire.write_message(self._broker.task_fd, pickle.dumps(("cancel", task.number), _wire.PROTOCOL))
                except OSError:
                    pass

    def _read(self, broker: _Broker, deadline: float | None) -> int:
        done = 0
        while True:
            try:
                message = broker.reader.receive(deadline, limits.max_message_bytes)
            except _wire.BadMessage as exc:
                self._lose_broker(f"sent what is no reply ({exc}), so it was ended")
                return done
            if message is None:
                if broker.proc.poll() is None:
                    return done
                message = _pipes.DIED  # it ended with its result pipe held open by something else
            if message is _pipes.DIED:
                self._lose_broker(f"died: {_pipes.exit_description(broker.proc.wait())}")
                return done
            if self._handle(message):
                return done
            done += 1
            # A done-callback may have waited on a future: a nested poll may have lost this broker.
            if self._broker is not broker or (deadline is not None and perf_counter() > deadline):
                return done

    def _handle(self, message: bytearray) -> bool:
        """Finish the task a reply is for. Returns True if the broker is gone (FATAL)."""
        view = memoryview(message)
        try:
            size = _wire.PREFIX.size
            _, header_size, _ = _wire.PREFIX.unpack_from(view)
            try:
                number, kind, payload = _wire.parse_broker_header(view[size : size + header_size])
            except _wire.BadMessage as exc:
                self._lose_broker(f"sent what is no reply ({exc}), so it was ended")
                return True
            if kind == _wire.FATAL:
                self._lose_broker(payload)
                return True
            task = self._sent.pop(number, None)
            if task is None:
                return False  # cancelled here meanwhile: its result is dropped
            if kind == _wire.LOST:
                fail(task, _errors.process_died()(f"{task.name} was lost on the Dask cluster: {payload}"))
            else:
                complete(task, payload, view[size + header_size :])
            return False
        finally:
            view.release()

    def _lose_broker(self, why: str) -> None:
        """The broker ended (or must): fail every task in flight with ProcessDied saying ``why``."""
        broker, self._broker = self._broker, None
        assert broker is not None
        pid = broker.proc.pid
        if broker.proc.poll() is None:
            broker.proc.kill()
        broker.close(0.2)
        lost, self._sent = list(self._sent.values()), {}
        for task in lost:
            fail(
                task,
                _errors.process_died()(
                    f"the broker process (pid {pid}) of ProcessPool(cluster={self._address!r}) {why}; "
                    f"{task.name} was in flight and is lost. The next task starts a new broker"
                ),
            )
