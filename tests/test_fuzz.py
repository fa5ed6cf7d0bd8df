"""Random interleavings of everything a user can do, checked after every step (hypothesis).

A stateful test drives submit (post/run/call from worker threads and the main thread), cancel,
waiting on Futures, pump, register/unregister, Ctrl-C (landing at a random point in a batch) and
joined_threads blocks entered and left, in random orders. After each step: ``stats()`` adds up,
no task ran twice; at the end: every accepted task ran once, or was cancelled, or its waiter got
SchedulerStopped, and no thread is left blocked.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from concurrent.futures import CancelledError
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import mainthread_tasks as mt
from mainthread_tasks import _interrupts, _lifecycle, _wake


class Lifecycle(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.log: list[int] = []  # ids of the tasks that ran, appended by the task (a C method:
        # no frame of its own, so a Ctrl-C often lands in the dispatcher around it)
        self.accepted: dict[int, str] = {}  # task id -> kind
        self.futures: dict[int, object] = {}
        self.call_outcomes: dict[int, str] = {}  # call_on_main from a worker: "returned"/"stopped"/...
        self.threads: list[threading.Thread] = []
        self.next_id = 0
        self.registered = 0
        self.blocks = ExitStack()
        self.block_depth = 0
        self.previous_handler = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    # -- the task every submission runs --------------------------------------------------------

    def ran(self, task_id) -> int:
        return self.log.count(task_id)

    def new_id(self):
        self.next_id += 1
        return self.next_id

    def submit(self, kind):
        task_id = self.new_id()
        try:
            if kind == "post":
                mt.post_on_main(self.log.append, task_id)
            else:
                self.futures[task_id] = mt.run_on_main(self.log.append, task_id)
        except mt.SchedulerStopped:
            return None
        self.accepted[task_id] = kind
        return task_id

    # -- rules ---------------------------------------------------------------------------------

    @rule(kind=st.sampled_from(["post", "run"]), count=st.integers(1, 20))
    def submit_from_main(self, kind, count):
        for _ in range(count):
            self.submit(kind)

    @rule(kind=st.sampled_from(["post", "run"]), count=st.integers(1, 20))
    def submit_from_a_worker(self, kind, count):
        thread = threading.Thread(target=lambda: [self.submit(kind) for _ in range(count)])
        thread.start()
        thread.join(10)
        assert not thread.is_alive()

    @rule()
    def call_from_a_worker(self):
        # Blocks until the main thread runs it or the scheduler stops: it may stay blocked over
        # many steps; the end of the run checks it finished.
        task_id = self.new_id()

        def worker():
            try:
                mt.call_on_main(self.log.append, task_id)
                self.call_outcomes[task_id] = "returned"
            except mt.SchedulerStopped:
                self.call_outcomes[task_id] = "stopped"
            except KeyboardInterrupt:
                self.call_outcomes[task_id] = "interrupted"

        self.accepted[task_id] = "call"
        thread = threading.Thread(target=worker)
        self.threads.append(thread)
        thread.start()

    # Which Future a rule picks is drawn as a number, not from the Futures there are: how many
    # there are depends on timing (a Ctrl-C, a stop), and hypothesis needs the same draws when it
    # replays a case.
    def pick(self, number):
        futures = sorted(self.futures)
        return self.futures[futures[number % len(futures)]] if futures else None

    @rule(number=st.integers(0, 10**6))
    def cancel(self, number):
        future = self.pick(number)
        if future is not None:
            future.cancel()

    @rule(number=st.integers(0, 10**6), timeout=st.sampled_from([0.0, 0.001, 0.01]))
    def wait_on_main(self, number, timeout):
        future = self.pick(number)
        if future is None:
            return
        try:
            future.result(timeout=timeout)
        except (TimeoutError, CancelledError, KeyboardInterrupt):
            pass

    @rule(timeout=st.sampled_from([0.0, 0.001]))
    def pump(self, timeout):
        try:
            mt.pump(timeout)
        except KeyboardInterrupt:
            pass

    @rule(tasks=st.integers(1, 300), delays=st.lists(st.floats(0.0, 0.0003), min_size=1, max_size=5))
    def ctrl_c_at_random_moments(self, tasks, delays):
        for delay in delays:
            for n in range(tasks):
                self.submit("post" if n % 3 == 0 else "run")
            started, heard, swallowed = threading.Event(), threading.Event(), threading.Event()

            def interrupter(delay=delay, started=started, heard=heard, swallowed=swallowed):
                # Not while the main thread is still inside thread.start(): it waits there on a
                # threading.Condition, and where a Ctrl-C interrupts a lock's acquire (the main thread
                # on Windows since 3.13) one landing in it leaves the Condition's lock released twice
                # ("release unlocked lock"): the standard library's own fragility, not ours.
                started.wait()
                time.sleep(delay)
                _thread.interrupt_main()
                # Outside the dispatcher, Python itself swallows a KeyboardInterrupt raised in a gc
                # callback (hypothesis has one) or a __del__: that one, and only that one, is sent
                # again. One the library lost would be heard neither way: the rule fails.
                while not heard.wait(0.01):
                    if swallowed.is_set():
                        swallowed.clear()
                        _thread.interrupt_main()

            def unraisable(args, previous=sys.unraisablehook, swallowed=swallowed):
                if isinstance(args.exc_value, KeyboardInterrupt):
                    swallowed.set()
                else:
                    previous(args)

            thread = threading.Thread(target=interrupter)
            lost = None
            previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
            try:
                try:
                    thread.start()
                    started.set()
                    give_up = time.monotonic() + 10
                    while True:  # only the interrupt ends this loop: it lands inside the try
                        mt.pump()
                        time.sleep(0.0002)
                        if time.monotonic() > give_up:  # the interrupt was lost: say what we know
                            lost = (
                                f"Ctrl-C lost: handler {signal.getsignal(signal.SIGINT)!r}, deferred "
                                f"{_interrupts.GUARD.deferred!r}, interrupter alive {thread.is_alive()}, "
                                f"sources {_wake.SOURCES.all!r}, stats {mt.stats()}"
                            )
                            break
                except KeyboardInterrupt:
                    pass
                heard.set()
                while thread.is_alive():
                    try:
                        thread.join(10)  # one sent again just before `heard` was set lands here
                    except KeyboardInterrupt:
                        pass
            finally:
                sys.unraisablehook = previous_hook
            assert lost is None, lost

    @rule()
    def register(self):
        mt.register()
        self.registered += 1

    @rule()
    def unregister(self):
        if self.registered:
            mt.unregister()
            self.registered -= 1

    @rule(workers=st.integers(0, 3))
    def enter_block(self, workers):
        if self.block_depth >= 3:
            return
        scope = self.blocks.enter_context(mt.joined_threads(timeout=20))
        self.block_depth += 1
        for _ in range(workers):
            scope.start(lambda: [self.submit("run") for _ in range(5)])

    @rule()
    def exit_block(self):
        # Leave the innermost block: pop it off the stack and close it.
        inner = self.blocks.pop_all()
        self.block_depth = 0
        inner.close()

    # -- checks --------------------------------------------------------------------------------

    @invariant()
    def stats_add_up(self):
        s = mt.stats()
        assert s.running is None
        assert s.submitted == s.completed + s.failed + s.cancelled + s.pending, s
        assert len(self.log) == len(set(self.log)), "a task ran twice"

    def teardown(self):
        try:
            self.blocks.close()
            while self.registered:
                mt.unregister()
                self.registered -= 1
            mt.register()  # accepting again, so what is queued can run
            deadline = time.monotonic() + 20
            while any(t.is_alive() for t in self.threads) and time.monotonic() < deadline:
                try:
                    mt.pump(0.01)
                except KeyboardInterrupt:
                    pass
            while mt.pump():
                pass
            assert not any(t.is_alive() for t in self.threads), "a thread was left blocked"
            for task_id, kind in self.accepted.items():
                ran = self.ran(task_id)
                if kind == "run":
                    future = self.futures[task_id]
                    interrupted = (
                        future.done() and not future.cancelled() and isinstance(future.exception(), KeyboardInterrupt)
                    )
                    assert ran == 1 or future.cancelled() or interrupted, (task_id, future)
                elif kind == "call":
                    assert (
                        self.call_outcomes[task_id] in ("returned", "interrupted")
                        and ran == 1
                        or (self.call_outcomes[task_id] == "stopped" and ran == 0)
                    ), (task_id, self.call_outcomes.get(task_id), ran)
            posts = [i for i, kind in self.accepted.items() if kind == "post"]
            dropped = [i for i in posts if not self.ran(i)]
            assert len(dropped) <= mt.stats().cancelled  # dropped posts are counted, never silent
            self.stats_add_up()
        finally:
            mt.unregister()
            signal.signal(signal.SIGINT, self.previous_handler if self.previous_handler is not None else signal.SIG_DFL)


Lifecycle.TestCase.settings = settings(
    max_examples=int(__import__("os").environ.get("MAINTHREAD_TASKS_FUZZ_EXAMPLES", "60")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,  # no .hypothesis folder in the checkout
)


@pytest.mark.timeout(600)
def test_random_interleavings_keep_every_guarantee():
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        Lifecycle.TestCase("runTest").runTest()
    finally:
        sys.setswitchinterval(previous)
        _lifecycle.LIFECYCLE.reject_queued()
