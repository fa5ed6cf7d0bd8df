"""Submitting work: run_on_main, post_on_main, call_on_main, @main_thread, bad input, order."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import traceback

import pytest

import mainthread_tasks as mt
from tests.support import start_thread

NOT_CALLABLE = [42, None, "print('hi')", b"bytes", 3.5, [print]]


@pytest.mark.parametrize("bad", NOT_CALLABLE, ids=repr)
@pytest.mark.parametrize("submit", [mt.run_on_main, mt.post_on_main, mt.call_on_main, mt.main_thread])
def test_non_callable_raises_type_error_at_submit(submit, bad):
    with pytest.raises(TypeError, match="must be callable"):
        submit(bad)
    assert mt.stats().pending == 0


def test_non_callable_from_a_worker_raises_in_the_worker():
    errors = []

    def worker():
        for submit in (mt.run_on_main, mt.post_on_main, mt.call_on_main):
            try:
                submit("__import__('os').getcwd()")
            except TypeError as exc:
                errors.append(exc)

    start_thread(worker).join(10)
    assert len(errors) == 3
    assert mt.stats().pending == 0


def test_strings_are_never_evaluated():
    marker = []
    with pytest.raises(TypeError):
        mt.run_on_main("marker.append(1)")
    mt.pump()
    assert marker == []


def test_run_on_main_is_queued_never_inline_even_on_main():
    ran = []
    future = mt.run_on_main(ran.append, 1)
    assert ran == [] and not future.done()
    assert mt.stats().pending == 1
    assert mt.pump() == 1
    assert ran == [1] and future.result(0) is None


def test_run_on_main_passes_args_and_kwargs():
    future = mt.run_on_main(lambda a, b=0, *, c: (a, b, c), 1, b=2, c=3)
    mt.pump()
    assert future.result(0) == (1, 2, 3)


def test_fn_named_args_does_not_clash_with_positional_only_fn():
    # fn is positional-only, so tasks may take keyword arguments called "fn".
    future = mt.run_on_main(lambda fn: fn, fn="value")
    mt.pump()
    assert future.result(0) == "value"
    assert mt.call_on_main(lambda fn: fn, fn=1) == 1


def test_wrong_arguments_fail_in_the_future_not_the_dispatcher():
    future = mt.run_on_main(lambda a: a)  # missing argument
    after = mt.run_on_main(lambda: "still running")
    assert mt.pump() == 2
    with pytest.raises(TypeError):
        future.result(0)
    assert after.result(0) == "still running"
    assert mt.stats().failed == 1


def test_tasks_run_on_the_main_thread():
    results = []

    def worker():
        results.append(mt.call_on_main(threading.current_thread))
        results.append(mt.call_on_main(mt.is_main_thread))

    with mt.joined_threads(timeout=30) as scope:
        scope.start(worker)
    assert results == [threading.main_thread(), True]


def test_is_main_thread():
    assert mt.is_main_thread()
    seen = []
    start_thread(lambda: seen.append(mt.is_main_thread())).join(10)
    assert seen == [False]


def test_call_on_main_runs_inline_on_main():
    order = []
    mt.run_on_main(order.append, "queued")
    assert mt.call_on_main(lambda: order.append("inline") or "result") == "result"
    assert order == ["inline"]
    mt.pump()
    assert order == ["inline", "queued"]


def test_call_on_main_from_worker_returns_result():
    out = []
    with mt.joined_threads(timeout=30) as scope:
        scope.start(lambda: out.append(mt.call_on_main(pow, 2, 10)))
    assert out == [1024]


def _fail_on_main():
    raise LookupError("from the main thread")


def test_call_on_main_reraises_with_main_thread_traceback():
    caught = []

    def worker():
        try:
            mt.call_on_main(_fail_on_main)
        except LookupError as exc:
            caught.append(exc)

    with mt.joined_threads(timeout=30) as scope:
        scope.start(worker)
    (exc,) = caught
    frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    assert "_fail_on_main" in frames  # where it was raised, on the main thread
    assert "worker" in frames  # and where the caller received it


def test_post_on_main_returns_none_and_runs():
    ran = []
    assert mt.post_on_main(ran.append, "x") is None
    assert mt.pump() == 1
    assert ran == ["x"]


@pytest.mark.allow_errors("logged", reason="the failure is logged on purpose; caplog checks it")
def test_post_on_main_failure_is_logged_and_counted(caplog):
    def broken_task():
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="mainthread_tasks"):
        mt.post_on_main(broken_task)
        ok = mt.run_on_main(lambda: "next task ran")
        assert mt.pump() == 2
    assert ok.result(0) == "next task ran"
    (record,) = [r for r in caplog.records if r.name == "mainthread_tasks"]
    assert "broken_task" in record.getMessage()
    assert record.exc_info[0] is ValueError
    assert mt.stats().failed == 1


def test_main_thread_decorator_keeps_metadata_and_dispatches():
    def make(name: str, *, size: int = 2) -> tuple:
        """Build something."""
        return name, size, mt.is_main_thread()

    original = make
    make = mt.main_thread(make)
    assert make.__name__ == "make" and make.__qualname__ == original.__qualname__
    assert make.__doc__ == "Build something."
    assert inspect.signature(make) == inspect.signature(original)
    assert make.__wrapped__ is original
    assert make("a") == ("a", 2, True)  # inline on main
    out = []
    with mt.joined_threads(timeout=30) as scope:
        scope.start(lambda: out.append(make("b", size=3)))
    assert out == [("b", 3, True)]


def test_main_thread_decorator_on_methods():
    class Thing:
        def __init__(self):
            self.calls = []

        @mt.main_thread
        def touch(self, value):
            self.calls.append((value, mt.is_main_thread()))
            return value

    thing = Thing()
    with mt.joined_threads(timeout=30) as scope:
        scope.start(thing.touch, 5)
    assert thing.calls == [(5, True)]


def test_partial_and_callable_objects_are_accepted():
    class Callable:
        def __call__(self, x):
            return x * 2

    futures = [mt.run_on_main(functools.partial(pow, 2), 3), mt.run_on_main(Callable(), 4)]
    mt.pump()
    assert [f.result(0) for f in futures] == [8, 8]


def test_per_thread_fifo_order_with_mixed_submissions():
    seen = []

    def producer(tag):
        for i in range(300):
            kind = i % 3
            if kind == 0:
                mt.post_on_main(seen.append, (tag, i))
            elif kind == 1:
                mt.run_on_main(seen.append, (tag, i))
            else:
                mt.call_on_main(seen.append, (tag, i))

    with mt.joined_threads(timeout=60) as scope:
        for tag in range(4):
            scope.start(producer, tag)
    mt.pump()
    for tag in range(4):
        assert [i for t, i in seen if t == tag] == list(range(300))


def test_the_order_claim_on_the_main_thread():
    # Queued tasks run in submission order; call_on_main on the main thread runs inline, first.
    order = []
    mt.post_on_main(order.append, "queued 1")
    mt.run_on_main(order.append, "queued 2")
    mt.call_on_main(order.append, "inline")
    mt.pump()
    assert order == ["inline", "queued 1", "queued 2"]
