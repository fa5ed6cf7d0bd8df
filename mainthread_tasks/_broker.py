"""The broker of a cluster pool: a process between Blender and a Dask scheduler (run by path).

Blender (``_cluster``) starts ``python -I <this file> ADDRESS TASK_PIPE RESULT_PIPE PARENT_PID`` with
an interpreter that has ``distributed`` installed; Blender itself never imports dask. The broker
holds the Dask ``Client`` and its threads -- they live here, not in Blender -- and relays:

- tasks from Blender's task pipe (``_wire``: header ``("task", number, packages, limit, name)``, body
  the pickled call) become ``run_on_worker(..., body, packages, limit)`` calls on the cluster, each
  with a key of its own, so equal calls are never merged; the tasks that arrived together go in one
  ``client.map`` (one graph update for the scheduler, ``_handle``). ``run_on_worker`` calls
  ``_process_child.execute``, which a worker plugin registered once per broker carries to every
  worker by value (cloudpickle; ``_execute_on_workers``), so the workers need nothing of ours
  installed, only the task's own module, and no task carries it; it returns the pickled result or failure,
  which the broker passes on unread as a reply. The broker never unpickles what the user sends or
  gets: it needs none of their modules.
- Finished results are fetched in batches, one ``client.gather`` for all the tasks that finished
  since the last one (``_fetch_finished``), as a plain client gathering many futures does; a task
  that failed in Dask itself, or whose batch could not be fetched, goes its own way (``_relay``).
- ``("cancel", number)`` cancels the task on the cluster.
- A task Dask gives up on (its workers died ``distributed.scheduler.allowed-failures`` + 1 times:
  KilledWorker), or any other error of Dask's own, goes back as LOST with the reason.
- When the connection to the scheduler is lost, or cannot be made, the broker sends FATAL and
  ends: Blender fails every task in flight and starts a new broker for the next submission.
- At end-of-file on the task pipe (Blender stops the pool, exits or dies), the broker cancels what
  it has on the cluster, closes the client and ends. It also ends with Blender like a worker does
  (``_process_child._end_with_parent``; the Job Object on Windows), and the scheduler itself
  releases the tasks of a client that disconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import queue
import signal
import sys
import threading
import uuid
from typing import Any

#: How long connecting to the scheduler may take before the broker gives up (FATAL).
CONNECT_TIMEOUT = 10.0
#: How often the broker checks that its client is still connected.
STATUS_INTERVAL = 0.25


_HERE = os.path.dirname(os.path.abspath(__file__))
_CHILD_MODULE = "mainthread_tasks_process_child"  # the name _process_child is loaded under


def _load_child_module() -> Any:
    """``_process_child`` of this folder (and through it ``_wire``), loaded by path: the broker's
    folder is not on ``sys.path`` (``-I``)."""
    path = os.path.join(_HERE, "_process_child.py")
    spec = importlib.util.spec_from_file_location(_CHILD_MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _plugin_name() -> str:
    """The name of the worker plugin that carries ``execute``, with a hash of the code it carries:
    two versions of the library (two add-ons, each with its own copy) sharing a cluster each run
    their own ``execute``."""
    digest = hashlib.sha256()
    for filename in ("_wire.py", "_process_child.py"):
        with open(os.path.join(_HERE, filename), "rb") as file:
            digest.update(file.read())
    return f"mainthread_tasks-execute-{digest.hexdigest()[:16]}"


def run_on_worker(plugin: str, body: bytes, packages: dict[str, list[str]], limit: int) -> Any:
    """What a Dask worker runs: the ``execute`` that the worker plugin ``plugin`` brought there
    (see ``_execute_on_workers``). Defined in the broker's ``__main__``, so that Dask pickles it by
    value: a few hundred bytes per task, and the workers need no copy of mainthread_tasks."""
    try:
        from distributed import get_worker  # type: ignore[import-not-found]  # (on a Dask worker)

        holder = get_worker().plugins[plugin]
    except (ImportError, ValueError, KeyError) as exc:
        raise RuntimeError(f"not on a Dask worker that has mainthread_tasks' worker plugin {plugin}") from exc
    return holder.execute(body, packages, limit)


def _execute_on_workers(worker_plugin: type, execute: Any) -> tuple[str, Any]:
    """``(its name, a Dask worker plugin)`` (``worker_plugin``: distributed's ``WorkerPlugin``,
    imported only in the broker) that carries ``execute`` to every worker once, the workers that
    join later too. ``execute`` goes by value (its module is registered with cloudpickle by
    ``Broker.serve``), so the workers need nothing of ours installed."""
    name = _plugin_name()

    class _ExecuteOnWorkers(worker_plugin):  # type: ignore[misc]
        idempotent = True

        def __init__(self) -> None:
            self.name = name
            self.execute = execute

    return name, _ExecuteOnWorkers()


def _key(name: str, token: str, number: int) -> str:
    """A key of its own for each submission (Dask merges equal keys), named after the function for
    the dashboard."""
    safe = "".join(c if c.isalnum() or c in "._" else "_" for c in name)[:60]
    return f"{safe}-mainthread_tasks-{token}-{number}"


class Broker:
    """The relay between Blender's pipes and a Dask client. Runs in the broker's event loop."""

    def __init__(self, child: Any, address: str, task_fd: int, result_fd: int) -> None:
        self.child = child
        self.wire = child._wire
        self.address = address
        self.task_fd = task_fd
        self.result_fd = result_fd
        self.outbox: queue.SimpleQueue[tuple[bytes, bytes] | None] = queue.SimpleQueue()
        self.futures: dict[int, Any] = {}  # number -> the dask Future of a task in flight
        self.token = uuid.uuid4().hex[:12]
        self.client: Any = None
        self.plugin = ""  # the name of the worker plugin that carries execute (see _execute_on_workers)
        self.finished: Any = None  # a distributed.as_completed of the tasks in flight
        self.more = asyncio.Event()  # set when a task is added to ``finished``

    # -- the pipes, each in a thread of its own (Windows pipes cannot be waited on by asyncio) ----

    def _read_tasks(self, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[Any]) -> None:
        while True:
            try:
                message = self.wire.read_message(self.task_fd)
            except (OSError, self.wire.BadMessage):
                message = None
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message is None:
                return

    def _write_replies(self) -> None:
        while True:
            reply = self.outbox.get()
            if reply is None:
                return
            try:
                self.wire.write_message(self.result_fd, *reply)
            except OSError:  # Blender is gone: nobody to tell
                os._exit(0)

    def _notice(self, number: int, kind: int, text: str) -> None:
        self.outbox.put((self.wire.notice_header(number, kind, text), b""))

    # -- the event loop -----------------------------------------------------------------------------

    async def serve(self) -> None:
        import cloudpickle  # type: ignore[import-not-found]  # (in the broker's interpreter only)
        from distributed import Client, as_completed
        from distributed.diagnostics.plugin import WorkerPlugin  # type: ignore[import-not-found]

        # execute() and the helpers it calls go to the workers by value (see _execute_on_workers).
        cloudpickle.register_pickle_by_value(self.child)

        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        threading.Thread(target=self._read_tasks, args=(loop, inbox), name="task-pipe", daemon=True).start()
        writer = threading.Thread(target=self._write_replies, name="result-pipe", daemon=True)
        writer.start()
        try:
            try:
                self.client = await asyncio.wait_for(
                    Client(self.address, asynchronous=True, set_as_default=False, timeout=CONNECT_TIMEOUT),
                    CONNECT_TIMEOUT + 5,
                )
            except BaseException as exc:  # noqa: BLE001 - whatever it is, Blender is told
                self._notice(0, self.wire.FATAL, f"could not connect to the Dask scheduler at {self.address}: {exc!r}")
                return
            try:
                self.plugin, plugin = _execute_on_workers(WorkerPlugin, self.child.execute)
                await asyncio.wait_for(self.client.register_plugin(plugin), CONNECT_TIMEOUT)
            except BaseException as exc:  # noqa: BLE001 - whatever it is, Blender is told
                self._notice(
                    0,
                    self.wire.FATAL,
                    f"the Dask cluster at {self.address} did not take mainthread_tasks' worker plugin "
                    f"(which loads the code that runs each task on the workers): {exc!r}",
                )
                await self.client.close(timeout=2)
                return
            self.finished = as_completed(loop=self.client.loop)
            watch = asyncio.ensure_future(self._watch_connection())
            fetch = asyncio.ensure_future(self._fetch_finished())
            try:
                while True:
                    messages = [await inbox.get()]
                    while not inbox.empty():  # all that came meanwhile: their tasks go in one submission
                        messages.append(inbox.get_nowait())
                    end = None in messages
                    self._handle([message for message in messages if message is not None])
                    if end or watch.done():
                        break
            finally:
                watch.cancel()
                fetch.cancel()
                if self.futures and self.client.status == "running":
                    await self.client.cancel(list(self.futures.values()))
                await self.client.close(timeout=2)
        finally:
            self.outbox.put(None)
            writer.join(5)

    def _handle(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Submit the tasks and cancel what ``messages`` say, in their order. Consecutive tasks go to
        the scheduler in one ``client.map`` (one graph update for all of them: with many tasks in
        flight, a submission per task would cost the scheduler more than the tasks)."""
        tasks: list[tuple[int, bytes, Any, int, str]] = []
        for header_bytes, body in messages:
            header = self.wire.load_header(header_bytes)
            if header[0] == "task":
                _, number, packages, limit, name = header
                tasks.append((number, body, packages, limit, name))
            elif header[0] == "cancel":
                self._submit(tasks)
                tasks = []
                future = self.futures.pop(header[1], None)
                if future is not None:
                    asyncio.ensure_future(self.client.cancel([future]))
        self._submit(tasks)

    def _submit(self, tasks: list[tuple[int, bytes, Any, int, str]]) -> None:
        if not tasks:
            return
        numbers, bodies, packages, limits, names = zip(*tasks, strict=True)
        futures = self.client.map(
            run_on_worker,
            [self.plugin] * len(tasks),
            bodies,
            packages,
            limits,
            key=[_key(name, self.token, number) for number, name in zip(numbers, names, strict=True)],
            pure=False,
        )
        for number, future in zip(numbers, futures, strict=True):
            self.futures[number] = future
            self.finished.add(future)
        self.more.set()

    async def _fetch_finished(self) -> None:
        """Fetch the results of the tasks that finished, in batches: one ``client.gather`` for all
        those that finished since the last one (with many tasks in flight, a request per result
        would cost more than the tasks). A task that failed in Dask itself or was cancelled there,
        or whose batch could not be fetched, goes to ``_relay``, which says why."""
        finished = self.finished
        while True:
            if finished.is_empty():
                self.more.clear()
                await self.more.wait()
                continue
            try:
                batch: list[Any] = [await finished.__anext__()]
            except StopAsyncIteration:  # emptied between the check and the wait
                continue
            while finished.has_ready():
                batch.append(await finished.__anext__())
            done: list[tuple[int, Any]] = []
            for future in batch:
                number = int(future.key.rsplit("-", 1)[1])
                in_flight = self.futures.get(number) is future
                if not in_flight:  # cancelled by Blender meanwhile
                    future.release()
                elif future.status == "finished":
                    done.append((number, future))
                else:
                    asyncio.ensure_future(self._relay(number, future))
            if not done:
                continue
            try:
                outcomes = await self.client.gather([future for _, future in done])
            except Exception:  # noqa: BLE001 - e.g. a worker holding a result died: one by one
                for number, future in done:
                    asyncio.ensure_future(self._relay(number, future))
                continue
            for (number, future), (failure, data) in zip(done, outcomes, strict=True):
                future.release()
                if self.futures.pop(number, None) is not None:
                    self.outbox.put((self.wire.reply_header(number, failure), data))

    async def _relay(self, number: int, future: Any) -> None:
        """Pass the outcome of one task on to Blender once Dask has it."""
        from distributed.client import FutureCancelledError  # type: ignore[import-not-found]

        try:
            failure, data = await future
        except FutureCancelledError:
            if self.futures.pop(number, None) is not None:  # not cancelled by Blender: lost
                self._notice(
                    number,
                    self.wire.LOST,
                    f"the Dask scheduler at {self.address} dropped it (the connection to it was lost, or "
                    "it was cancelled there); it may or may not have run",
                )
            return
        except BaseException as exc:  # noqa: BLE001 - Dask's own error (execute never raises)
            if self.futures.pop(number, None) is not None:
                self._notice(number, self.wire.LOST, f"the Dask cluster at {self.address} lost it: {_describe(exc)}")
            return
        finally:
            future.release()
        if self.futures.pop(number, None) is not None:
            self.outbox.put((self.wire.reply_header(number, failure), data))

    async def _watch_connection(self) -> None:
        while self.client.status == "running":
            await asyncio.sleep(STATUS_INTERVAL)
        self._notice(0, self.wire.FATAL, f"lost the connection to the Dask scheduler at {self.address}")


def _describe(exc: BaseException) -> str:
    kind = type(exc).__name__
    if kind == "KilledWorker":
        return (
            f"every worker that ran it died (KilledWorker: {exc}); Dask gives up on a task after "
            "distributed.scheduler.allowed-failures worker deaths"
        )
    return f"{kind}: {exc}"


def main(argv: list[str]) -> int:
    child = _load_child_module()
    child._end_with_parent(int(argv[4]))
    task_fd, result_fd = child._open_pipes(argv[2], argv[3])
    child._keep_pipes_to_ourselves((task_fd, result_fd))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for Blender, which ends the broker
    try:
        import distributed  # noqa: F401 - says now, in one line, what is missing
    except ImportError as exc:
        child._wire.write_message(
            result_fd,
            child._wire.notice_header(
                0,
                child._wire.FATAL,
                f"the broker's interpreter {sys.executable} cannot import distributed ({exc}); pass "
                "ProcessPool(cluster=..., python=...) an interpreter that has it (pip install distributed)",
            ),
        )
        return 3
    asyncio.run(Broker(child, argv[1], task_fd, result_fd).serve())
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.modules[_CHILD_MODULE].exit_at_once(code)  # the copy main() loaded
