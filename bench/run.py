#!/usr/bin/env python3
"""Benchmark mainthread_tasks inside real Blender next to its anchors, and print one table.

    python3 bench/run.py                  # both modes, ~2-3 minutes
    python3 bench/run.py --quick          # a smoke run of the pipeline (figures not meaningful)
    python3 bench/run.py --skip-gui       # background mode only (no Xvfb needed)
    python3 bench/run.py --skip-background  # GUI mode only
    python3 bench/run.py --skip-process   # without run_in_process's figures (bench/bench_process.py)
    python3 bench/run.py --skip-async     # without the coroutines' figures (bench/bench_async.py)
    BLENDER=/opt/blender/blender python3 bench/run.py
    python3 bench/run.py --blender-5.2    # Debian sid's Blender 5.2 LTS (the chroot scripts/_setup.py builds)

Background mode (``blender --background``, the main thread drains with ``pump``): throughput of
``post_on_main``, ``run_on_main`` and their anchors, the blocking round trip, memory. GUI mode
(``xvfb-run ... blender``, Blender's real event loop): round-trip latency, the longest stall while a
backlog drains, idle CPU. Processes (``bench/bench_process.py``): run_in_process's speed-up on CPU-bound
tasks and its per-task overhead next to ProcessPoolExecutor's. Coroutines (``bench/bench_async.py``): in the UI,
the passes an ``await asyncio.sleep(0)`` costs, the longest stall while 100 coroutines step next to
the queue's, idle CPU with the loop alive. Every anchor is measured in the same run as the figure it is compared with;
the table shows the ratio, the target and PASS/MISS. Writes bench/results/latest.json, latest.md and
latest.png (GUI latency and stall next to the anchors); with ``--blender-5.2``, blender-5.2.json, .md
and .png. Exit status 1 if a target was missed or a run failed. The README's "Performance" section says what each line measures.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(BENCH))
import _setup  # noqa: E402
import _pauses  # noqa: E402
from _png import Canvas  # noqa: E402

BACKGROUND_TIMEOUT = 900  # seconds
GUI_TIMEOUT = 600
COMMAND = "python3 bench/run.py"


# -- running Blender -----------------------------------------------------------------------------


def _run_blender(label: str, command: list[str], out: Path, timeout: int, env: dict | None = None) -> dict:
    print(f"[bench] {label}: {_setup.shown(command)}", flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{label}: killed after {timeout} s") from None
    if not out.exists():
        raise RuntimeError(f"{label}: no result written (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    if result.get("error"):
        raise RuntimeError(f"{label} failed inside Blender:\n{result['error']}")
    print(f"[bench] {label}: done in {time.monotonic() - started:.0f} s", flush=True)
    return result


def blender_commands(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the command that runs Blender, the one that runs xvfb-run): $BLENDER or Debian's 3.4.1 on this
    machine, or with ``--blender-5.2`` both inside the sid chroot."""
    if "--blender-5.2" in argv:
        inside = _setup.sid_command()
        return [*inside, "blender"], [*inside, "xvfb-run"]
    return [_setup.blender_executable()], [_setup.xvfb_run()]


def run_background(blender: list[str], scratch: Path, quick: bool) -> dict:
    out = scratch / "background.json"
    command = [*blender, "--background", "--factory-startup", "--python-exit-code", "1",
               "--python", str(BENCH / "bench_background.py"), "--", str(out)] + (["--quick"] if quick else [])
    return _run_blender("background", command, out, BACKGROUND_TIMEOUT)


def run_gui(blender: list[str], xvfb_run: list[str], scratch: Path, quick: bool) -> dict:
    out = scratch / "gui.json"
    command = [*xvfb_run, "-a", "-s", "-screen 0 1280x720x24", blender[-1], "--factory-startup",
               "--python", str(BENCH / "bench_gui.py"), "--", str(out)] + (["--quick"] if quick else [])
    user = scratch / "user"  # keep the user's own Blender config (recent files...) untouched
    user.mkdir(exist_ok=True)
    return _run_blender("gui", command, out, GUI_TIMEOUT, env=dict(os.environ, BLENDER_USER_RESOURCES=str(user)))


def machine() -> dict:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return {"description": f"{model}, {os.cpu_count()} logical CPUs{memory}, {platform.system()} {platform.release()}",
            "load_average_at_start": os.getloadavg()}


# -- the table -------------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value / 1e6:.2f} M/s" if value >= 1e6 else f"{value / 1e3:.0f} k/s"


def _time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _bytes(value: float) -> str:
    return f"{value:,.0f} B"


def _row(figure, value, fmt, anchor, anchor_value, target=None, higher_is_better=False):
    """One line: ``target`` is the bound on value/anchor_value (None: shown for information)."""
    ratio = value / anchor_value if anchor_value else float("nan")
    if target is None:
        verdict, target_text = "info", ""
    else:
        ok = ratio >= target if higher_is_better else ratio <= target
        verdict, target_text = ("PASS" if ok else "MISS"), f"{'≥' if higher_is_better else '≤'} {target:g}×"
    return {"figure": figure, "value": fmt(value), "anchor": anchor, "anchor_value": fmt(anchor_value),
            "ratio": f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×", "target": target_text, "result": verdict,
            "raw": {"value": value, "anchor": anchor_value, "ratio": ratio}}


def background_rows(bg: dict) -> list[dict]:
    tp = {name: case["best"] for name, case in bg["throughput"].items()}
    rt = bg["round_trip"]
    memory = bg["memory"]["bytes_per_pending_task"]
    growth = bg["memory"]["growth"]
    n = f"{bg['producers']} producers"
    median = {name: statistics.median(case["runs"]) for name, case in bg["throughput"].items()}
    return [
        _row(f"post_on_main throughput ({n})", tp["post_on_main"], _rate,
             "raw SimpleQueue put → get_nowait+call (floor)", tp["raw_simplequeue"], 0.5, True),
        _row(f"post_on_main throughput, median of {bg['throughput_repeats']}", median["post_on_main"], _rate,
             "raw SimpleQueue floor, median", median["raw_simplequeue"], None, True),
        _row(f"run_on_main throughput ({n})", tp["run_on_main"], _rate,
             "asyncio loop.call_soon_threadsafe", tp["asyncio_call_soon_threadsafe"], 1.2, True),
        _row(f"run_on_main throughput, median of {bg['throughput_repeats']}", median["run_on_main"], _rate,
             "asyncio call_soon_threadsafe, median", median["asyncio_call_soon_threadsafe"], None, True),
        _row(f"run_on_main throughput ({n})", tp["run_on_main"], _rate,
             "one stock concurrent.futures.Future per task", tp["plain_future"], None, True),
        _row(f"stock Future per task ({n})", tp["plain_future"], _rate,
             "asyncio loop.call_soon_threadsafe", tp["asyncio_call_soon_threadsafe"], None, True),
        _row("call_on_main round trip p50 (background)", rt["call_on_main"]["p50"], _time,
             "stock Future + SimpleQueue round trip p50", rt["raw_future_simplequeue"]["p50"], 1.3),
        _row("call_on_main round trip p99 (background)", rt["call_on_main"]["p99"], _time,
             "stock Future + SimpleQueue round trip p99", rt["raw_future_simplequeue"]["p99"]),
        _row("bytes per pending post_on_main task", memory["post_on_main"], _bytes,
             "raw SimpleQueue (fn, args) item", memory["raw_simplequeue"]),
        _row("bytes per pending run_on_main task", memory["run_on_main"], _bytes,
             "stock Future + (future, fn, args) item", memory["plain_future"]),
        _row("bytes per pending run_on_main task", memory["run_on_main"], _bytes,
             "asyncio call_soon_threadsafe Handle", memory["asyncio_call_soon_threadsafe"]),
        _row(f"traced memory growth after {growth['tasks']:,} tasks", max(growth["growth_bytes"], 0), _bytes,
             "bound", growth["bound_bytes"], 1.0),
    ]


def gui_rows(gui: dict) -> list[dict]:
    idle = gui["idle_pass"]
    one_pass = idle["p50"]
    rt = gui["round_trip"]
    stall = gui["stall"]
    budget = gui["tick_budget"]
    cpu = gui["idle_cpu"]
    backlog = f"UI stall, backlog {gui['backlog_tasks']:,} × 0.2 ms"
    enabled, recent, empty = cpu["enabled"], cpu["enabled_recent_work"], cpu["empty_timer"]
    return [
        _row("GUI round trip p50", rt["ours"]["p50"], _time, "one event-loop pass (idle, p50)", one_pass, 1.0),
        _row("GUI round trip p99", rt["ours"]["p99"], _time, "one event-loop pass (idle, p50)", one_pass, 2.0),
        _row("GUI round trip after > 1 s without work, p50", rt["ours_after_quiet"]["p50"], _time,
             "one event-loop pass (idle, p50)", one_pass),
        _row(f"GUI round trip after > 1 s without work, longest of {rt['ours_after_quiet']['n']}",
             rt["ours_after_quiet"]["max"], _time, "one event-loop pass (idle, p50)", one_pass),
        _row("GUI round trip after > 10 s without work, p50", rt["ours_after_long_quiet"]["p50"], _time,
             "one event-loop pass (idle, p50)", one_pass),
        _row(f"GUI round trip after > 10 s without work, longest of {rt['ours_after_long_quiet']['n']}",
             rt["ours_after_long_quiet"]["max"], _time, "one event-loop pass (idle, p50)", one_pass),
        _row("GUI round trip p50", rt["ours"]["p50"], _time, "docs recipe (1.0 s timer) p50", rt["docs_recipe_1.0s"]["p50"]),
        _row("GUI round trip p99", rt["ours"]["p99"], _time, "docs recipe (1.0 s timer) p99", rt["docs_recipe_1.0s"]["p99"]),
        _row("GUI round trip p50", rt["ours"]["p50"], _time, "0.3 s polling timer p50", rt["poll_0.3s"]["p50"]),
        _row(f"longest {backlog}", stall["ours"]["max"], _time,
             f"tick budget ({_time(budget)}) + one pass (idle p50)", budget + one_pass, 1.0),
        _row(f"longest {backlog}", stall["ours"]["max"], _time, "docs recipe longest stall", stall["docs_recipe_1.0s"]["max"]),
        _row(f"longest {backlog}", stall["ours"]["max"], _time,
             "tick budget + longest idle pass (same jitter)", budget + idle["max"]),
        _row(f"p99 {backlog}", stall["ours"]["p99"], _time, "tick budget + idle pass p99", budget + idle["p99"]),
        _row(f"p50 {backlog}", stall["ours"]["p50"], _time, "tick budget + idle pass p50", budget + one_pass),
        _row("longest add-on timer pass in that drain", stall["ours"]["longest_addon_pass"], _time,
             "tick budget", budget),
        _row("longest add-on timer pass in that drain, less the pauses measured in its tasks",
             stall["ours"]["longest_addon_share"], _time, "tick budget + one task", budget + gui["backlog_task_seconds"]),
        _row("most an add-on pass, less those pauses, ran past the budget it gave itself",
             max(stall["ours"]["longest_addon_overshoot"], 0.0), _time, "one task", gui["backlog_task_seconds"]),
        _row("longest task in that drain (a 0.2 ms busy-wait: the rest is preemption)", stall["ours"]["longest_task"], _time,
             "the task's own time", gui["backlog_task_seconds"]),
        *[_row(f"{rank} longest stall = Blender's part {_time(gap['blender_part'])} + the add-on's pass "
               f"{_time(gap['addon_pass'])} (its budget then {_time(gap['budget'])}; pauses in its tasks "
               f"{_time(gap['task_pauses'])}) + {_time(gap['outside'])} outside both", gap["gap"], _time,
               "tick budget + one pass (idle p50)", budget + one_pass)
          for rank, gap in zip(("the", "2nd", "3rd"), stall["ours"]["worst_gaps"])],
        _row(f"longest {backlog}, every gap less the pauses measured in it", stall["ours"]["net"]["max"], _time,
             "tick budget + one pass (idle p50)", budget + one_pass),
        *pause_rows(gui, stall["ours"]["max"] - (budget + one_pass)),
        _row("idle CPU, add-on enabled (% of a core, median)", cpu["enabled_percent"], lambda v: f"{v:.2f} %",
             "add-on disabled", cpu["disabled_percent"]),
        _overhead_row("idle CPU overhead (enabled − disabled), Blender idling (> 10 s after work)", enabled, empty,
                      "≤ 0.2 pp"),
        _overhead_row("idle CPU overhead, 1–10 s after work (polling every 15 ms)", recent, empty),
    ]


def _overhead_row(figure: str, overhead: dict, empty: dict, target: str = "",
                  anchor: str = "an empty timer returning 0.0, same windows") -> dict:
    pp = lambda v: f"{v:+.2f} pp"  # noqa: E731
    result = ("PASS" if overhead["pp"] <= 0.2 else "MISS") if target else "info"
    return {"figure": figure, "value": f"{pp(overhead['pp'])} (s.e. {overhead['stderr']:.2f}; means {pp(overhead['pp_mean'])})",
            "anchor": anchor, "anchor_value": pp(empty["pp"]),
            "ratio": "", "target": target, "result": result,
            "raw": {"value": overhead["pp"], "anchor": empty["pp"], "ratio": None}}


def pause_rows(gui: dict, excess: float) -> list[dict]:
    """The machine's own pauses of a running thread (bench/_pauses.py) next to how far the longest
    stall went past tick budget + one pass."""
    rows = []
    for where, pauses in (("Blender's main thread, same session", gui.get("machine_pauses")),
                          ("plain python3, no Blender running", gui.get("machine_pauses_python"))):
        if not pauses:
            continue
        waited = pauses["run_queue_wait"]
        queue = "" if waited is None else f"; the guest kernel kept it waiting {_time(waited)} in all"
        rows.append(_row(f"longest pause of a busy loop ({where}; {pauses['seconds']:.0f} s, "
                         f"{pauses['over_1ms']} pauses over 1 ms{queue})", pauses["longest"], _time,
                         "longest stall − (tick budget + one pass)", max(excess, 0.0)))
    return rows


COLUMNS = ("figure", "value", "anchor", "anchor_value", "ratio", "target", "result")
HEADERS = ("figure", "value", "anchor (same run)", "anchor value", "ratio", "target", "result")


def print_table(rows: list[dict]) -> None:
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in zip(COLUMNS, HEADERS)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths))
    print("\n" + line + "\n" + "-" * len(line))
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(COLUMNS, widths)))


def markdown(rows: list[dict], info: dict) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    facts = [f"- Command: `{info['command']}` ({info['seconds']:.0f} s in all)",
             f"- Machine: {info['machine']['description']}; load average {info['machine']['load_average_at_start'][0]:.2f} "
             f"at the start, {info['load_average_at_end'][0]:.2f} at the end",
             f"- Blender {info['blender']} (Python {info['python']}), {info['date']}"]
    return "\n".join(lines + [""] + facts) + "\n"


# -- the plot --------------------------------------------------------------------------------------


def plot(gui: dict, path: Path, caption: str) -> None:
    """GUI round-trip latency and longest stall, on a log scale in ms, next to the anchors."""
    import math

    rt, stall, one_pass = gui["round_trip"], gui["stall"], gui["idle_pass"]["p50"]
    ours_dark, ours_light = (40, 110, 200), (140, 180, 230)
    anchor_dark, anchor_light = (200, 90, 60), (235, 170, 150)
    groups = [
        ("Round trip worker > main > worker: p50 (dark), p99 (light)", [
            ("mainthread_tasks", rt["ours"]["p50"], rt["ours"]["p99"], ours_dark, ours_light),
            ("0.3 s polling timer", rt["poll_0.3s"]["p50"], rt["poll_0.3s"]["p99"], anchor_dark, anchor_light),
            ("docs recipe, 1.0 s timer", rt["docs_recipe_1.0s"]["p50"], rt["docs_recipe_1.0s"]["p99"],
             anchor_dark, anchor_light),
        ], [(one_pass, "target p50: 1 pass"), (2 * one_pass, "target p99: 2 passes")]),
        ("Longest UI stall while 20,000 tasks of 0.2 ms drain", [
            ("mainthread_tasks", stall["ours"]["max"], None, ours_dark, None),
            ("docs recipe, 1.0 s timer", stall["docs_recipe_1.0s"]["max"], None, anchor_dark, None),
        ], [(gui["tick_budget"] + one_pass, "target: tick budget + 1 pass")]),
    ]
    width, left, right, text = 1100, 320, 140, 2  # text: font scale
    low, high = 1e-4, 10.0  # seconds: 0.1 ms .. 10 s

    def x_of(seconds: float) -> int:
        span = math.log10(high) - math.log10(low)
        return int(left + (width - left - right) * (math.log10(max(seconds, low)) - math.log10(low)) / span)

    bar, gap = 16, 4
    height = 60 + sum(36 + sum(2 * bar + gap + 14 if p99 else bar + 14 for _, _, p99, _, _ in items) + 14 * len(marks) + 10
                      for _, items, marks in groups) + 90
    canvas = Canvas(width, height)
    canvas.text(10, 12, "mainthread_tasks in Blender's UI (Xvfb) vs the bpy.app.timers docs recipe", scale=text)
    y = axis_top = 50
    for title, items, marks in groups:
        canvas.text(10, y + 6, title, (60, 60, 60), scale=text)
        y += 36
        top = y
        for label, p50, p99, dark, light in items:
            canvas.text(10, y + 1, label, scale=text)
            for value, color in ((p50, dark), (p99, light)):
                if value is None:
                    continue
                canvas.rect(left, y, x_of(value), y + bar, color)
                canvas.text(x_of(value) + 5, y + 1, f"{value * 1e3:,.1f} ms", scale=text)
                y += bar + gap
            y += 14 - gap
        for seconds, label in marks:
            canvas.vline(x_of(seconds), top - 4, y, (0, 150, 0), dash=4)
            canvas.text(x_of(seconds) + 4, y, label, (0, 120, 0), scale=text)
            y += 14 * text - 14
            y += 14
        y += 10
    for exponent in range(-1, 5):  # 0.1 ms .. 10,000 ms
        x = x_of(10.0 ** exponent / 1e3)
        canvas.vline(x, axis_top, y, (215, 215, 215))
        label = f"{10.0 ** exponent:g} ms"
        canvas.text(x - canvas.text_width(label, text) // 2, y + 6, label, (90, 90, 90), scale=text)
    canvas.text(10, y + 36, caption, (90, 90, 90))
    canvas.save(path)


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    blender, xvfb_run = blender_commands(argv)
    name = "blender-5.2" if "--blender-5.2" in argv else "latest"
    started = time.monotonic()
    info = {"command": " ".join([COMMAND, *argv]), "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "quick": quick}
    results: dict = {}
    rows: list[dict] = []
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mainthread_tasks-bench-") as scratch:
        if "--skip-background" not in argv:
            results["background"] = run_background(blender, Path(scratch), quick)
            rows += background_rows(results["background"])
        if "--skip-gui" not in argv:
            results["gui"] = run_gui(blender, xvfb_run, Path(scratch), quick)
            seconds = results["gui"]["stall"]["ours"]["drain_seconds"]
            print(f"[bench] machine pauses: a busy loop in plain python3 for {seconds:.0f} s", flush=True)
            time.sleep(2.0)  # Blender and Xvfb have just quit: let them finish
            results["gui"]["machine_pauses_python"] = _pauses.measure(seconds)
            rows += gui_rows(results["gui"])
            plot(results["gui"], RESULTS / f"{name}.png",
                 f"{info['date']}, Blender {results['gui']['blender']}, {info['machine']['description']}")
        if "--skip-async" not in argv:
            import bench_async

            results["async"] = bench_async.run(blender, xvfb_run, Path(scratch), quick)
            rows += bench_async.rows(results["async"])
        if "--skip-process" not in argv:
            import bench_process

            results["process"] = bench_process.run(blender, Path(scratch), quick)
            rows += bench_process.rows(results["process"])
    some = results.get("background") or results.get("gui") or results.get("process", {}).get("cpu") or {}
    info.update(seconds=time.monotonic() - started, load_average_at_end=os.getloadavg(),
                blender=some.get("blender", "?"), python=some.get("python", "?"))
    print_table(rows)
    (RESULTS / f"{name}.json").write_text(json.dumps({"info": info, "rows": rows, "results": results}, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown(rows, info))
    print(f"\n{info['machine']['description']}; Blender {info['blender']}; {info['seconds']:.0f} s")
    print(f"wrote {RESULTS / name}.json, {name}.md" + (f", {name}.png" if "gui" in results else ""))
    missed = [r["figure"] for r in rows if r["result"] == "MISS"]
    if missed:
        print(f"MISSED {len(missed)} target(s): " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
