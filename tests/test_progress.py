"""progress(): lock-free counting from many threads, update/cancel/attach, the headless stderr lines.

The core has no bpy: these run on plain CPython and in every real Blender tier (the status bar
display is tested in Blender's UI, tests/test_gui_addon.py).
"""

from __future__ import annotations

import io
import re
import threading
import time
from itertools import pairwise

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _progress
from tests import support


@pytest.fixture(autouse=True)
def quiet_progress(monkeypatch):
    """stderr lines go to a buffer, every 50 ms; no progress outlives a test."""
    out = io.StringIO()
    monkeypatch.setattr(_progress, "_stderr", out)
    monkeypatch.setattr(_progress, "PRINT_INTERVAL", 0.05)
    yield out
    for item in _progress.open_progresses():
        item.close()


class Yielding(int):
    """An int whose additions let other threads run in the middle (CPython 3.11+ switches threads
    only at calls and loop ends, so ``self.done += 1`` on plain ints never interleaves; this does)."""

    def __radd__(self, other):
        time.sleep(0)  # releases the GIL between reading the old total and storing the new one
        return int(other) + int(self)


class RacyCounter:
    """The plain attribute increment that progress() replaces: loses updates under threads."""

    done = 0

    def advance(self, n=1):
        self.done += n


def _hammer(counter, threads=8, rounds=3000):
    two = Yielding(2)
    start = threading.Barrier(threads)

    def worker():
        start.wait()
        for _ in range(rounds):
            counter.advance(two)
            counter.advance()

    workers = [support.start_thread(worker) for _ in range(threads)]
    for w in workers:
        w.join(60)
    assert not any(w.is_alive() for w in workers)
    return threads * rounds * 3


def test_advance_from_8_threads_loses_nothing():
    with mt.progress("count") as p:
        expected = _hammer(p)
        assert p.done == expected


def test_the_same_load_makes_a_plain_attribute_increment_lose_updates():
    """The control: the workload above does expose a racy counter (else that test proves nothing)."""
    racy = RacyCounter()
    expected = _hammer(racy)
    assert racy.done < expected


def test_update_sets_done_total_and_label_and_advance_adds_to_it():
    p = mt.progress("Downloading")
    assert (p.done, p.total, p.label, p.fraction(), p.text()) == (0, None, "Downloading", None, "0")
    p.advance()
    p.advance(2.5)
    assert p.done == 3.5 and p.text() == "3.5"
    p.update(10, total=40)
    assert p.done == 10 and p.text() == "10/40 25%"
    p.advance()
    p.advance(4)
    assert p.done == 15
    p.update(39.9, label="Unpacking")
    assert p.label == "Unpacking" and p.text() == "39.9/40 99%"  # never rounded up to 100% early
    p.update(50)
    assert p.fraction() == 1.0
    p.update(0, total=0)
    assert p.fraction() is None and p.text() == "0"
    p.close()


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: mt.progress(3), TypeError),
        (lambda: mt.progress("x", total=-1), ValueError),
        (lambda: mt.progress("x", total=float("nan")), TypeError),
        (lambda: mt.progress("x", total=True), TypeError),
        (lambda: mt.progress("x", total="10"), TypeError),
        (lambda: mt.progress("x").update("3"), TypeError),
        (lambda: mt.progress("x").update(1, label=5), TypeError),
        (lambda: mt.progress("x").update(1, total=float("inf")), TypeError),
        (lambda: mt.progress("x").attach(object()), TypeError),
    ],
)
def test_bad_input_fails_at_the_call(call, error):
    with pytest.raises(error):
        call()


def test_cancel_cancels_the_attached_futures_that_have_not_started():
    p = mt.progress("work")
    queued = [p.attach(mt.run_on_main(int)) for _ in range(3)]
    done = p.attach(mt.run_on_main(int))
    mt.pump()  # runs all four
    later = [p.attach(mt.run_on_main(int)) for _ in range(2)]
    assert not p.cancelled
    p.cancel()
    assert p.cancelled
    assert all(f.cancelled() for f in later)
    assert all(f.done() and not f.cancelled() for f in queued + [done])
    assert p.attach(mt.run_on_main(int)).cancelled()  # attached after the cancel: at once
    assert mt.pump() == 0
    p.cancel()  # idempotent
    p.close()


def test_cancel_from_another_thread_stops_a_worker_loop():
    p = mt.progress("loop")
    seen = []

    def worker():
        while not p.cancelled:
            p.advance()
        seen.append(p.done)

    thread = support.start_thread(worker)
    time.sleep(0.05)
    p.cancel()
    thread.join(10)
    assert not thread.is_alive() and seen and seen[0] > 0
    p.close()


def test_context_manager_closes_and_an_exception_cancels(quiet_progress):
    with mt.progress("ok", total=2) as p:
        p.advance(2)
        assert p in _progress.open_progresses()
    assert p.closed and p not in _progress.open_progresses()
    p.close()  # idempotent
    future = None
    with pytest.raises(ZeroDivisionError):
        with mt.progress("bad", total=4) as q:
            future = q.attach(mt.run_on_main(int))
            q.advance()
            raise ZeroDivisionError
    assert q.closed and q.cancelled and future.cancelled()
    lines = quiet_progress.getvalue().splitlines()
    assert re.fullmatch(r"ok: done, 2/2 100% in \d+\.\d s", lines[0]), lines
    assert re.fullmatch(r"bad: failed \(ZeroDivisionError\) at 1/4 25% after \d+\.\d s", lines[1]), lines
    assert mt.pump() == 0  # takes the cancelled task off the queue


def test_find_and_the_newest_one_not_cancelled():
    a, b, c = mt.progress("a"), mt.progress("b"), mt.progress("c")
    assert _progress.open_progresses()[-3:] == (a, b, c)
    assert _progress.find(0) is c and _progress.find(a._serial) is a
    c.cancel()
    assert _progress.find(0) is b  # what ESC cancels next
    c.close()
    assert _progress.find(c._serial) is None
    for p in (a, b):
        p.close()
    assert _progress.find(0) is None


def test_headless_lines_at_most_once_per_interval_and_one_at_the_end(quiet_progress, monkeypatch):
    stamps = []
    buffer = quiet_progress

    class Stamped(io.StringIO):
        def write(self, text):
            stamps.append((time.monotonic(), text))
            return buffer.write(text)

    monkeypatch.setattr(_progress, "_stderr", Stamped())
    interval = _progress.PRINT_INTERVAL
    with mt.progress("Downloading", total=100) as down:
        with mt.progress("Baking") as bake:
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                down.update(min(99, int(100 * (1 - (end - time.monotonic()) / 0.5))))
                bake.advance()
                time.sleep(0.002)
            bake.cancel()
            support.wait_until(lambda: "(cancelling)" in stamps[-1][1], timeout=10)
    periodic = [(t, text) for t, text in stamps if "done" not in text and "cancelled at" not in text]
    assert 3 <= len(periodic) <= 0.5 / interval + 2, stamps
    gaps = [b[0] - a[0] for a, b in pairwise(periodic)]
    assert min(gaps) >= interval * 0.95, gaps
    line = r"Downloading: \d+/100 \d+% \| Baking: \d+"
    for stamp, text in periodic:
        if stamp < bake._started + interval and re.fullmatch(r"Downloading: \d+/100 \d+%\n", text):
            continue  # Baking opened a moment later: shown once it is an interval old
        assert re.fullmatch(line + r"( \(cancelling\))?\n", text), periodic
    assert periodic[-1][1].endswith(f"Baking: {bake.text()} (cancelling)\n"), periodic[-1]  # the cancel, once
    assert re.fullmatch(r"Baking: cancelled at \d+ after 0\.\d s\n", stamps[-2][1]), stamps[-2:]
    assert re.fullmatch(r"Downloading: done, \d+/100 \d+% in 0\.\d s\n", stamps[-1][1]), stamps[-1:]


def test_no_line_while_nothing_changes(quiet_progress):
    with mt.progress("Waiting", total=3) as p:
        p.advance()
        time.sleep(6 * _progress.PRINT_INTERVAL)
        lines = quiet_progress.getvalue().splitlines()
        assert lines == ["Waiting: 1/3 33%"], lines


def test_the_printer_thread_ends_with_the_last_progress():
    with mt.progress("x"):
        printer = _progress._printer
        assert printer is not None and printer.is_alive()
    printer.join(2)
    assert not printer.is_alive() and _progress._printer is None


def test_a_progress_opened_inside_joined_threads_may_outlive_the_block():
    """The printer thread it starts is the library's: the block does not wait for it."""
    with mt.joined_threads(timeout=5) as scope:
        p = mt.progress("outliving")
        scope.start(p.advance)
    assert p.done == 1 and not p.closed
    p.close()


HEADLESS_SCRIPT = r"""
import time
import mainthread_tasks as mt

def download(p):
    for _ in range(25):
        time.sleep(0.1)
        p.advance()

with mt.progress("Downloading", total=25) as p:
    with mt.joined_threads(timeout=30) as scope:
        scope.start(download, p)
print("SCRIPT DONE", flush=True)
"""


def test_headless_script_prints_a_line_a_second_and_one_at_the_end(tmp_path):
    """A real interpreter of this tier (blender --background in the Blender tiers), unpatched."""
    proc = support.run_script(HEADLESS_SCRIPT, tmp_path, timeout=60)
    assert proc.returncode == 0 and "SCRIPT DONE" in proc.stdout, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Downloading")]
    assert 1 <= len(lines) - 1 <= 4, lines  # ~2.5 s of work: a line after 1 s and 2 s (3 if slow), the end
    assert all(re.fullmatch(r"Downloading: \d+/25 \d+%", line) for line in lines[:-1]), lines
    assert re.fullmatch(r"Downloading: done, 25/25 100% in \d+\.\d s", lines[-1]), lines
