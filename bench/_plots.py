"""The benchmark's plots, drawn with matplotlib from a results file of ``bench/run.py``.

    <bench venv>/bin/python bench/_plots.py bench/results/latest.json OUT_DIR [PREFIX]

``bench/run.py`` runs this in its own venv (``scripts/_setup.py`` ``bench_python()``, matplotlib
pinned there), never inside Blender; ``python3 bench/run.py --report`` draws them again from the
latest results. Writes, and prints the paths of (each name after PREFIX, if given):

- ``round_trip.png``: how long a worker waits for the main thread in Blender's UI, every round trip
  of each mechanism as a cumulative distribution on a log scale (ours, ours after quiet spells, the
  ``bpy.app.timers`` docs recipe and a 0.3 s polling timer);
- ``stall.png``: the UI's frame time while a backlog of 20,000 tasks drains, pass by pass: ours next
  to the docs recipe (log scale), and ours alone, every frame split into its parts;
- ``throughput.png``: tasks per second through each path, best and every repeat, next to the anchors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

OURS = "#1f6fc5"
OURS_QUIET = "#6aa6e6"
OURS_LONG_QUIET = "#a9cdf2"
ANCHOR = "#d0582c"
ANCHOR_LIGHT = "#eba184"
TARGET = "#2a9d4b"
GREY = "#6b6b6b"

#: The plots' style, set by main().
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
}


def milliseconds(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.3g} ms"


def _ms_axis(axis) -> None:
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v * 1e3:g}"))


def _save(fig, results: dict, path: Path, bottom: float = 0.03) -> Path:
    """Lay the figure out above a footer line that says which run it shows, and write it."""
    info = results["info"]
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.text(
        0.01,
        0.005,
        f"{info['date']} · Blender {info['blender']} · {info['machine']['description']} · `{info['command']}`",
        fontsize=7.5,
        color=GREY,
        va="bottom",
    )
    fig.savefig(path)
    plt.close(fig)
    return path


def round_trip(results: dict, out: Path, prefix: str = "") -> Path:
    """Cumulative distributions of the GUI round trips, log scale."""
    gui = results["results"]["gui"]
    rt = gui["round_trip"]
    one_pass = gui["idle_pass"]["p50"]
    series = [
        ("mainthread_tasks", rt["ours"], OURS, "-"),
        ("mainthread_tasks, after > 1 s idle", rt["ours_after_quiet"], OURS_QUIET, "-"),
        ("mainthread_tasks, after > 10 s idle", rt["ours_after_long_quiet"], OURS_LONG_QUIET, "-"),
        ("a timer polling every 0.3 s", rt["poll_0.3s"], ANCHOR_LIGHT, "--"),
        ("docs recipe (a 1.0 s timer)", rt["docs_recipe_1.0s"], ANCHOR, "--"),
    ]
    fig, ax = plt.subplots(figsize=(9.5, 5.6))
    for label, data, color, style in series:
        values = sorted(data["samples"])
        n = len(values)
        ax.step(
            values,
            [(i + 1) / n for i in range(n)],
            where="post",
            color=color,
            linestyle=style,
            linewidth=2.2,
            label=f"{label}: {milliseconds(data['p50'])} ({n:,})",
        )
    ax.axvline(one_pass, color=TARGET, linestyle=":", linewidth=1.5)
    ax.text(one_pass * 1.06, 0.04, f"one event-loop pass\n({milliseconds(one_pass)}, idle)", color=TARGET, fontsize=8.5)
    ax.set_xscale("log")
    _ms_axis(ax.xaxis)
    ax.set_xlim(5e-4, 1.5)
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0%}"))
    ax.set_xlabel("round trip worker → main thread → worker (ms, log scale)")
    ax.set_ylabel("round trips at most this long")
    ax.set_title("Waiting for Blender's main thread in the UI: mainthread_tasks vs the docs recipe", loc="left")
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(0.0, -0.13),
        ncol=2,
        fontsize=8.5,
        alignment="left",
        title="median round trip (round trips measured)",
        title_fontsize=8.5,
    )
    return _save(fig, results, out / f"{prefix}round_trip.png")


def stall(results: dict, out: Path, prefix: str = "") -> Path:
    """The frame time pass by pass while the backlog drains: ours next to the docs recipe (log
    scale), then ours alone with every frame split into its parts."""
    gui = results["results"]["gui"]
    ours, docs = gui["stall"]["ours"], gui["stall"]["docs_recipe_1.0s"]
    target = gui["tick_budget"] + gui["idle_pass"]["p99"]
    tasks = f"{gui['backlog_tasks']:,} tasks of {gui['backlog_task_seconds'] * 1e3:g} ms"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9.5, 7.2), height_ratios=(1, 1.15))

    budget = milliseconds(gui["tick_budget"])
    for label, data, color in (
        ("docs recipe (all in one pass)", docs, ANCHOR),
        (f"mainthread_tasks ({budget} per pass)", ours, OURS),
    ):
        s = data["series"]
        top.step(
            s["end"],
            s["gap"],
            where="pre",
            color=color,
            linewidth=1.4,
            label=f"{label}: longest {milliseconds(data['max'])}\ndrained in {data['drain_seconds']:.1f} s",
        )
    top.axhline(target, color=TARGET, linestyle=":", linewidth=1.5)
    top.set_yscale("log")
    _ms_axis(top.yaxis)
    top.set_ylim(2e-3, 10)
    top.set_xlim(0, max(ours["drain_seconds"], docs["drain_seconds"]) * 1.02)
    top.set_ylabel("time between two passes (ms, log)")
    top.set_xlabel("seconds since the backlog was queued")
    top.set_title(f"The UI's frame time while {tasks} drain", loc="left")
    top.legend(loc="center right", fontsize=8.5)

    s = ours["series"]
    starts = [end - gap for end, gap in zip(s["end"], s["gap"], strict=True)]
    addon_own = [max(0.0, a - p) for a, p in zip(s["addon_pass"], s["task_pauses"], strict=True)]
    pauses = [min(p, a) for a, p in zip(s["addon_pass"], s["task_pauses"], strict=True)]
    blender = [max(0.0, g - a - o) for g, a, o in zip(s["gap"], s["addon_pass"], s["outside"], strict=True)]
    bottom_of = [0.0] * len(starts)
    for label, heights, color in (
        ("Blender's part of the pass (events, redraw, its idle wait)", blender, "#c9c9c9"),
        ("the add-on running tasks", addon_own, OURS),
        ("the machine pausing the thread inside a task", pauses, "#8a3ffc"),
        ("elsewhere (outside both)", s["outside"], "#f2b705"),
    ):
        bottom.bar(
            starts, heights, width=s["gap"], bottom=bottom_of, align="edge", color=color, linewidth=0, label=label
        )
        bottom_of = [b + h for b, h in zip(bottom_of, heights, strict=True)]
    bottom.axhline(
        target,
        color=TARGET,
        linestyle=":",
        linewidth=1.5,
        label=f"target for p99: tick budget + idle pass p99 = {milliseconds(target)}",
    )
    longest = ours["worst_gaps"][0]
    bottom.set_ylim(0, max(longest["gap"] * 1.35, target * 1.6))
    bottom.set_xlim(0, ours["drain_seconds"] * 1.01)
    _ms_axis(bottom.yaxis)
    bottom.set_ylabel("frame time, split (ms)")
    bottom.set_xlabel("seconds since the backlog was queued")
    verdict = "PASS" if ours["p99"] <= target else "MISS"
    bottom.set_title(
        f"mainthread_tasks alone: p99 {milliseconds(ours['p99'])}, {verdict}; longest {milliseconds(longest['gap'])}",
        loc="left",
    )
    bottom.legend(loc="upper left", fontsize=8, ncol=2)
    return _save(fig, results, out / f"{prefix}stall.png")


THROUGHPUT = (  # (key in the results, label, ours?)
    ("raw_simplequeue", "raw SimpleQueue put → get + call\n(the floor: no Future, no counters)", False),
    ("post_on_main", "post_on_main", True),
    ("run_on_main", "run_on_main (a Future per task)", True),
    ("asyncio_call_soon_threadsafe", "asyncio loop.call_soon_threadsafe", False),
    ("plain_future", "a stock concurrent.futures.Future\nper task on a SimpleQueue", False),
)


def throughput(results: dict, out: Path, prefix: str = "") -> Path:
    """Tasks per second, 8 producer threads, the main thread draining with pump(): best repeat as a
    bar, every repeat as a dot."""
    bg = results["results"]["background"]
    cases = bg["throughput"]
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    rows = list(reversed(THROUGHPUT))
    for y, (key, _label, ours) in enumerate(rows):
        best = cases[key]["best"]
        ax.barh(y, best, color=OURS if ours else ANCHOR_LIGHT, height=0.6)
        ax.plot(cases[key]["runs"], [y] * len(cases[key]["runs"]), "o", color="black", markersize=3.5, alpha=0.6)
        ax.text(best, y, f"  {best / 1e3:,.0f} k/s", va="center", fontsize=9)
    ax.set_yticks(range(len(rows)), [label for _, label, _ in rows], fontsize=9)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v / 1e6:g} M"))
    ax.set_xlim(0, max(case["best"] for case in cases.values()) * 1.2)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(
        f"tasks per second: {bg['producers']} producer threads, the main thread drains "
        f"(bar: best of {bg['throughput_repeats']}, dots: every repeat)"
    )
    ax.set_title("Throughput in blender --background: mainthread_tasks (blue) vs the anchors", loc="left")
    return _save(fig, results, out / f"{prefix}throughput.png", bottom=0.04)


def main(argv: list[str]) -> int:
    matplotlib.use("Agg")  # files only, no display
    plt.rcParams.update(STYLE)
    source, out = Path(argv[0]), Path(argv[1])
    prefix = argv[2] if len(argv) > 2 else ""
    results = json.loads(source.read_text())
    drawn = []
    if "gui" in results["results"]:
        if "samples" not in results["results"]["gui"]["round_trip"]["ours"]:
            print(
                f"{source} holds no raw samples (written before the plots existed): run python3 bench/run.py",
                file=sys.stderr,
            )
            return 1
        drawn += [round_trip(results, out, prefix), stall(results, out, prefix)]
    if "background" in results["results"]:
        drawn.append(throughput(results, out, prefix))
    for path in drawn:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
