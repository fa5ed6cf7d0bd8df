#!/usr/bin/env python3
"""Benchmark mainthread_tasks inside real Blender next to its anchors, and print one table.

    python3 bench/run.py                  # both modes, ~2-3 minutes
    python3 bench/run.py --quick          # a smoke run of the pipeline (figures not meaningful)
    python3 bench/run.py --skip-gui       # background mode only (no Xvfb needed)
    python3 bench/run.py --skip-background  # GUI mode only
    python3 bench/run.py --skip-process   # without run_in_process's figures (bench/bench_process.py)
    python3 bench/run.py --skip-async     # without the coroutines' figures (bench/bench_async.py)
    python3 bench/run.py --report         # the table and plots again from bench/results/latest.json
    BLENDER=/opt/blender/blender python3 bench/run.py
    python3 bench/run.py --blender-5.2    # Debian sid's Blender 5.2 LTS (the chroot scripts/_setup.py builds)

Background mode (``blender --background``, the main thread drains with ``pump``): throughput of
``post_on_main``, ``run_on_main`` and their anchors, the blocking round trip, memory. GUI mode
(``xvfb-run ... blender``, Blender's real event loop): round-trip latency, the longest stall while a
backlog drains, idle CPU. Processes (``bench/bench_process.py``): run_in_process's speed-up on
CPU-bound tasks and its per-task overhead next to ProcessPoolExecutor's. Coroutines
(``bench/bench_async.py``): in the UI, the passes an ``await asyncio.sleep(0)`` costs, the longest
stall while 100 coroutines step next to the queue's, idle CPU with the loop alive. Every anchor is measured in
the same run as the figure it is compared with; the table shows the ratio, the target and PASS/MISS.
Writes bench/results/latest.json (the figures and the raw samples), latest.md (the table) and the
plots (bench/_plots.py: round_trip.png, stall.png, throughput.png); with ``--blender-5.2``,
blender-5.2.json, .md and blender-5.2-*.png. Exit status 1 if a target was missed or a run failed.
docs/performance.md says what each line measures.
"""

from __future__ import annotations

import json
import os
import platform
import re
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
import _setup  # noqa: E402 - after the sys.path entries above
import bench_process  # noqa: E402 - after the sys.path entries above

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
        raise RuntimeError(
            f"{label}: no result written (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
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
    command = [
        *blender,
        "--background",
        "--factory-startup",
        "--python-exit-code",
        "1",
        "--python",
        str(BENCH / "bench_background.py"),
        "--",
        str(out),
    ] + (["--quick"] if quick else [])
    return _run_blender("background", command, out, BACKGROUND_TIMEOUT)


#: Xvfb's screen for every run of the bench in Blender's UI.
SCREEN = "-screen 0 1280x720x24"


def ui_command(xvfb_run: list[str], blender: list[str], script: Path | str, *args: str) -> list[str]:
    """Blender's UI under Xvfb running ``script`` with ``args`` after ``--``. ``xvfb_run`` is the
    command that starts xvfb-run (a chroot prefix included), ``blender`` the one that runs Blender
    (its last item the binary)."""
    return [*xvfb_run, "-a", "-s", SCREEN, blender[-1], "--factory-startup", "--python", str(script), "--", *args]


def run_gui(blender: list[str], xvfb_run: list[str], scratch: Path, quick: bool) -> dict:
    out = scratch / "gui.json"
    command = ui_command(xvfb_run, blender, BENCH / "bench_gui.py", str(out), *(["--quick"] if quick else []))
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
    return {
        "description": f"{model}, {os.cpu_count()} logical CPUs{memory}, {platform.system()} {platform.release()}",
        "load_average_at_start": os.getloadavg(),
    }


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
    return {
        "figure": figure,
        "value": fmt(value),
        "anchor": anchor,
        "anchor_value": fmt(anchor_value),
        "ratio": f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×",
        "target": target_text,
        "result": verdict,
        "raw": {"value": value, "anchor": anchor_value, "ratio": ratio},
    }


def background_rows(bg: dict) -> list[dict]:
    tp = {name: case["best"] for name, case in bg["throughput"].items()}
    rt = bg["round_trip"]
    memory = bg["memory"]["bytes_per_pending_task"]
    growth = bg["memory"]["growth"]
    n = f"{bg['producers']} producers"
    median = {name: statistics.median(case["runs"]) for name, case in bg["throughput"].items()}
    return [
        _row(
            f"post_on_main throughput ({n})",
            tp["post_on_main"],
            _rate,
            "raw SimpleQueue put → get_nowait+call (floor)",
            tp["raw_simplequeue"],
            0.5,
            True,
        ),
        _row(
            f"post_on_main throughput, median of {bg['throughput_repeats']}",
            median["post_on_main"],
            _rate,
            "raw SimpleQueue floor, median",
            median["raw_simplequeue"],
            None,
            True,
        ),
        _row(
            f"run_on_main throughput ({n})",
            tp["run_on_main"],
            _rate,
            "asyncio loop.call_soon_threadsafe",
            tp["asyncio_call_soon_threadsafe"],
            1.2,
            True,
        ),
        _row(
            f"run_on_main throughput, median of {bg['throughput_repeats']}",
            median["run_on_main"],
            _rate,
            "asyncio call_soon_threadsafe, median",
            median["asyncio_call_soon_threadsafe"],
            None,
            True,
        ),
        _row(
            f"run_on_main throughput ({n})",
            tp["run_on_main"],
            _rate,
            "one stock concurrent.futures.Future per task",
            tp["plain_future"],
            None,
            True,
        ),
        _row(
            f"stock Future per task ({n})",
            tp["plain_future"],
            _rate,
            "asyncio loop.call_soon_threadsafe",
            tp["asyncio_call_soon_threadsafe"],
            None,
            True,
        ),
        _row(
            "call_on_main round trip p50 (background)",
            rt["call_on_main"]["p50"],
            _time,
            "stock Future + SimpleQueue round trip p50",
            rt["raw_future_simplequeue"]["p50"],
            1.3,
        ),
        _row(
            "call_on_main round trip p99 (background)",
            rt["call_on_main"]["p99"],
            _time,
            "stock Future + SimpleQueue round trip p99",
            rt["raw_future_simplequeue"]["p99"],
        ),
        _row(
            "bytes per pending post_on_main task",
            memory["post_on_main"],
            _bytes,
            "raw SimpleQueue (fn, args) item",
            memory["raw_simplequeue"],
        ),
        _row(
            "bytes per pending run_on_main task",
            memory["run_on_main"],
            _bytes,
            "stock Future + (future, fn, args) item",
            memory["plain_future"],
        ),
        _row(
            "bytes per pending run_on_main task",
            memory["run_on_main"],
            _bytes,
            "asyncio call_soon_threadsafe Handle",
            memory["asyncio_call_soon_threadsafe"],
        ),
        _row(
            f"traced memory growth after {growth['tasks']:,} tasks",
            max(growth["growth_bytes"], 0),
            _bytes,
            "bound",
            growth["bound_bytes"],
            1.0,
        ),
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
        _row(
            "GUI round trip after > 1 s without work, p50",
            rt["ours_after_quiet"]["p50"],
            _time,
            "one event-loop pass (idle, p50)",
            one_pass,
        ),
        _row(
            f"GUI round trip after > 1 s without work, longest of {rt['ours_after_quiet']['n']}",
            rt["ours_after_quiet"]["max"],
            _time,
            "one event-loop pass (idle, p50)",
            one_pass,
        ),
        _row(
            "GUI round trip after > 10 s without work, p50",
            rt["ours_after_long_quiet"]["p50"],
            _time,
            "one event-loop pass (idle, p50)",
            one_pass,
        ),
        _row(
            f"GUI round trip after > 10 s without work, longest of {rt['ours_after_long_quiet']['n']}",
            rt["ours_after_long_quiet"]["max"],
            _time,
            "one event-loop pass (idle, p50)",
            one_pass,
        ),
        _row(
            "GUI round trip p50",
            rt["ours"]["p50"],
            _time,
            "docs recipe (1.0 s timer) p50",
            rt["docs_recipe_1.0s"]["p50"],
        ),
        _row(
            "GUI round trip p99",
            rt["ours"]["p99"],
            _time,
            "docs recipe (1.0 s timer) p99",
            rt["docs_recipe_1.0s"]["p99"],
        ),
        _row("GUI round trip p50", rt["ours"]["p50"], _time, "0.3 s polling timer p50", rt["poll_0.3s"]["p50"]),
        _row(f"p99 {backlog}", stall["ours"]["p99"], _time, STALL_TARGET, budget + idle["p99"], 1.0),
        _row(
            f"p99 {backlog}, every frame less the machine's pauses measured in it",
            net_p99(stall["ours"]),
            _time,
            STALL_TARGET,
            budget + idle["p99"],
        ),
        _row(
            f"longest {backlog}: {longest_stall_parts(stall['ours']['worst_gaps'][0])}",
            stall["ours"]["max"],
            _time,
            STALL_TARGET,
            budget + idle["p99"],
        ),
        _row(f"p50 {backlog}", stall["ours"]["p50"], _time, "tick budget + idle pass p50", budget + one_pass),
        _row(
            f"longest {backlog}",
            stall["ours"]["max"],
            _time,
            "docs recipe longest stall",
            stall["docs_recipe_1.0s"]["max"],
        ),
        _row(
            "longest add-on timer pass in that drain, less the pauses measured in its tasks",
            stall["ours"]["longest_addon_share"],
            _time,
            "tick budget + one task",
            budget + gui["backlog_task_seconds"],
        ),
        _row(
            "longest task in that drain (a 0.2 ms busy-wait: the rest is the machine pausing the thread)",
            stall["ours"]["longest_task"],
            _time,
            "the task's own time",
            gui["backlog_task_seconds"],
        ),
        _row(
            "idle CPU, add-on enabled (% of a core, median)",
            cpu["enabled_percent"],
            lambda v: f"{v:.2f} %",
            "add-on disabled",
            cpu["disabled_percent"],
        ),
        _overhead_row(
            "idle CPU overhead (enabled − disabled), Blender idling (> 10 s after work)", enabled, empty, "≤ 0.2 pp"
        ),
        _overhead_row("idle CPU overhead, 1–10 s after work (polling every 15 ms)", recent, empty),
    ]


#: The UI stall target: the frame time while a backlog drains, at its 99th percentile, stays within
#: the add-on's tick budget plus what an idle event-loop pass takes at its 99th percentile.
STALL_TARGET = "tick budget + idle pass p99"


def longest_stall_parts(gap: dict) -> str:
    """The longest gap split into its parts (bench_gui.py's _stall)."""
    return (
        f"Blender's part {_time(gap['blender_part'])} + the add-on's pass {_time(gap['addon_pass'])} "
        f"(its budget {_time(gap['budget'])}; the machine paused its tasks {_time(gap['task_pauses'])}) "
        f"+ {_time(gap['outside'])} outside both"
    )


def net_p99(ours: dict) -> float:
    """The p99 frame time less what the machine paused the main thread inside each frame: the time
    its tasks (busy-waits) ran past their length, and the time outside Blender's part and the
    add-on's pass."""
    s = ours["series"]
    net = sorted(
        gap - paused - outside for gap, paused, outside in zip(s["gap"], s["task_pauses"], s["outside"], strict=True)
    )
    return net[min(len(net) - 1, int(0.99 * len(net)))]


def stall_verdict(gui: dict) -> str:
    """The stall target as one line: PASS or MISS, the longest stall and its parts next to it."""
    ours, bound = gui["stall"]["ours"], gui["tick_budget"] + gui["idle_pass"]["p99"]
    verdict = "PASS" if ours["p99"] <= bound else "MISS"
    return (
        f"UI stall target (p99 ≤ {STALL_TARGET}): {verdict}: p99 {_time(ours['p99'])} against {_time(bound)} "
        f"({_time(net_p99(ours))} less the machine's pauses measured in the frames); "
        f"longest {_time(ours['max'])} = {longest_stall_parts(ours['worst_gaps'][0])}"
    )


def _overhead_row(
    figure: str,
    overhead: dict,
    empty: dict,
    target: str = "",
    anchor: str = "an empty timer returning 0.0, same windows",
) -> dict:
    def pp(v):
        return f"{v:+.2f} pp"

    result = ("PASS" if overhead["pp"] <= 0.2 else "MISS") if target else "info"
    return {
        "figure": figure,
        "value": f"{pp(overhead['pp'])} (s.e. {overhead['stderr']:.2f}; means {pp(overhead['pp_mean'])})",
        "anchor": anchor,
        "anchor_value": pp(empty["pp"]),
        "ratio": "",
        "target": target,
        "result": result,
        "raw": {"value": overhead["pp"], "anchor": empty["pp"], "ratio": None},
    }


COLUMNS = ("figure", "value", "anchor", "anchor_value", "ratio", "target", "result")
HEADERS = ("figure", "value", "anchor (same run)", "anchor value", "ratio", "target", "result")


def print_table(rows: list[dict]) -> None:
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in zip(COLUMNS, HEADERS, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))


def markdown(rows: list[dict], info: dict) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    facts = [
        f"- Command: `{info['command']}` ({info['seconds']:.0f} s in all)",
        f"- Machine: {info['machine']['description']}; load average {info['machine']['load_average_at_start'][0]:.2f} "
        f"at the start, {info['load_average_at_end'][0]:.2f} at the end",
        f"- Blender {info['blender']} (Python {info['python']}), {info['date']}",
    ]
    return "\n".join(lines + [""] + facts) + "\n"


# -- the plots -----------------------------------------------------------------------------------


def plots(json_path: Path, prefix: str = "") -> list[Path]:
    """The plots of a results file, drawn by bench/_plots.py with matplotlib in the bench's own venv
    (never inside Blender), named ``<prefix><plot>.png``. Returns the files written."""
    python = _setup.bench_python()
    proc = subprocess.run(
        [str(python), str(BENCH / "_plots.py"), str(json_path), str(json_path.parent), prefix],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode:
        raise RuntimeError(f"the plots failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return [Path(line) for line in proc.stdout.split()]


# -- main ------------------------------------------------------------------------------------------


def write_json(path: Path, data: dict) -> None:
    """Indented JSON, with every list of plain values (the raw samples) on one line."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    path.write_text(
        re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s+", ", ", m.group(1)) + "]", text) + "\n"
    )


def rows_of(results: dict) -> list[dict]:
    return [
        *(background_rows(results["background"]) if "background" in results else []),
        *(gui_rows(results["gui"]) if "gui" in results else []),
        *(bench_process.rows(results["process"]) if "process" in results else []),
        *(_async_rows(results["async"]) if "async" in results else []),
    ]


def _async_rows(result: dict) -> list[dict]:
    import bench_async

    return bench_async.rows(result)


def report(info: dict, results: dict, name: str = "latest") -> list[dict]:
    """Print the table, write <name>.json, <name>.md and the plots; return the rows."""
    rows = rows_of(results)
    print_table(rows)
    write_json(RESULTS / f"{name}.json", {"info": info, "rows": rows, "results": results})
    (RESULTS / f"{name}.md").write_text(markdown(rows, info))
    print(f"\n{info['machine']['description']}; Blender {info['blender']}; {info['seconds']:.0f} s")
    if "gui" in results:
        print(stall_verdict(results["gui"]))
    prefix = "" if name == "latest" else f"{name}-"
    written = [RESULTS / f"{name}.json", RESULTS / f"{name}.md", *plots(RESULTS / f"{name}.json", prefix)]
    print("wrote " + ", ".join(str(path.relative_to(ROOT)) for path in written))
    return rows


def measure(argv: list[str]) -> tuple[dict, dict]:
    """Run the benchmarks in Blender; return (info, results)."""
    quick = "--quick" in argv
    if "--blender-5.2" in argv and "--skip-process" not in argv:
        # bench_process.py starts the host's Blender binary (and the bpy 5.0.1 venv) itself.
        raise SystemExit("bench/run.py: the process bench does not run in the sid chroot: add --skip-process")
    blender, xvfb_run = blender_commands(argv)
    started = time.monotonic()
    info = {
        "command": " ".join([COMMAND, *argv]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "quick": quick,
    }
    results: dict = {}
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mainthread_tasks-bench-") as scratch:
        if "--skip-background" not in argv:
            results["background"] = run_background(blender, Path(scratch), quick)
        if "--skip-gui" not in argv:
            results["gui"] = run_gui(blender, xvfb_run, Path(scratch), quick)
        if "--skip-async" not in argv:
            import bench_async

            results["async"] = bench_async.run(blender, xvfb_run, Path(scratch), quick)
        if "--skip-process" not in argv:
            results["process"] = bench_process.run(blender[0], Path(scratch), quick)
    some = results.get("background") or results.get("gui") or results.get("process", {}).get("cpu") or {}
    info.update(
        seconds=time.monotonic() - started,
        load_average_at_end=os.getloadavg(),
        blender=some.get("blender", "?"),
        python=some.get("python", "?"),
    )
    return info, results


def main(argv: list[str]) -> int:
    name = "blender-5.2" if "--blender-5.2" in argv else "latest"
    if "--report" in argv:  # the table and the plots again from the latest results, measuring nothing
        latest = json.loads((RESULTS / f"{name}.json").read_text())
        info, results = latest["info"], latest["results"]
    else:
        info, results = measure(argv)
    rows = report(info, results, name)
    missed = [r["figure"] for r in rows if r["result"] == "MISS"]
    if missed:
        print(f"MISSED {len(missed)} target(s): " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
