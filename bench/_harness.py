"""What every bench shares: paths, running Blender, the table, the results files and the command line.

A bench is a module ``bench/bench_<name>.py`` that holds what runs in Blender and its table rows:

- ``KEY``: its name in the results (and ``--skip-<KEY>`` in bench/run.py);
- ``IN_SID_CHROOT``: whether it runs in the sid chroot's Blender 5.2 (``--blender-5.2``);
- ``run(context) -> dict``: starts Blender (``Context.background``, ``Context.ui``, ``Context.python``)
  on its parts, the functions ``part(out, quick)`` that run inside it and write ``out``; returns
  what they wrote;
- ``rows(results) -> list[dict]``: its lines of the table (``row``, ``overhead_row``);
- ``notes(results) -> list[str]``: lines printed after the table.

bench/run.py runs them all, and a bench with its own command (bench_async.py, bench_process.py,
bench_progress.py) runs itself, through ``main``. Inside Blender this file is the script: Blender
runs ``--python bench/_harness.py -- MODULE PART OUT.json [--quick]``, which puts the repository
on sys.path and calls ``MODULE.PART(OUT.json, quick)`` (so the part's module is imported under its
own name, and worker processes can import the functions it hands them).

Importing this file (or any bench) does no work: bench/run.py imports every bench for its rows.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
HARNESS = BENCH / "_harness.py"

#: Xvfb's screen for every run of the bench in Blender's UI.
SCREEN = "-screen 0 1280x720x24"

#: The benches whose results bench/_plots.py draws.
PLOTTED = ("gui", "background")

Row = dict[str, Any]
Part = Callable[[Path, bool], None]


# -- paths -----------------------------------------------------------------------------------------


def setup() -> ModuleType:
    """scripts/_setup.py: where Blender, Xvfb, the chroot and the venvs are (built if missing)."""
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import _setup

    return _setup


def shell_path() -> str:
    """$PATH as a shell has it. A pyenv python3 runs the bench with its own bin folder put first on
    PATH ("pyenv exec"). Blender inherits PATH, and Debian's Blender then takes its standard library
    from there (and so its workers that interpreter: an unoptimized build here, a third slower than
    Debian's). Blender started from a shell sees the PATH without it."""
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if "/.pyenv/versions/" not in p)


# -- running Blender -------------------------------------------------------------------------------


def blender_commands(sid: bool) -> tuple[list[str], list[str]]:
    """(the command that runs Blender, the one that runs xvfb-run): $BLENDER or Debian's 3.4.1 on this
    machine, or with ``sid`` both inside the sid chroot (Blender 5.2 LTS)."""
    _setup = setup()
    if sid:
        inside = _setup.sid_command()
        return [*inside, "blender"], [*inside, "xvfb-run"]
    return [_setup.blender_executable()], [_setup.xvfb_run()]


def ui_command(xvfb_run: list[str], blender: list[str], script: Path | str, *args: str) -> list[str]:
    """Blender's UI under Xvfb running ``script`` with ``args`` after ``--``. ``xvfb_run`` is the
    command that starts xvfb-run (a chroot prefix included), ``blender`` the one that runs Blender
    (its last item the binary)."""
    return [*xvfb_run, "-a", "-s", SCREEN, blender[-1], "--factory-startup", "--python", str(script), "--", *args]


def run_blender(
    label: str, command: list[str], out: Path, timeout: float, env: dict[str, str], from_shell: bool
) -> dict:
    """Runs ``command`` (Blender, or a Python with bpy) with ``env`` added to the environment and, if
    ``from_shell``, $PATH as from a shell (``shell_path``); returns the JSON it wrote to ``out``.
    Raises RuntimeError if it timed out, exited non-zero, wrote nothing, or wrote an ``"error"`` (a
    traceback from inside Blender)."""
    print(f"[bench] {label}: {setup().shown(command)}", flush=True)
    started = time.monotonic()
    if from_shell:
        env = dict(env, PATH=shell_path())
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{label}: killed after {timeout} s") from None
    result = json.loads(out.read_text()) if out.exists() else None
    if result and result.get("error"):
        raise RuntimeError(f"{label} failed inside Blender:\n{result['error']}")
    if result is None or proc.returncode:
        raise RuntimeError(
            f"{label}: exit {proc.returncode}, {'a' if result else 'no'} result\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    print(f"[bench] {label}: done in {time.monotonic() - started:.0f} s", flush=True)
    return result


@dataclass(frozen=True)
class Context:
    """One run of the bench: how to start Blender, a scratch folder, and the command line's choices."""

    blender: list[str]  # the command that runs Blender (its last item the binary)
    xvfb_run: list[str]  # the command that runs xvfb-run
    scratch: Path
    quick: bool = False  # a smoke run of the pipeline (figures not meaningful)
    sid: bool = False  # Blender 5.2 in the sid chroot
    skip: tuple[str, ...] = ()  # the --skip-* choices

    # ``from_shell`` below: Blender sees $PATH as a shell has it (``shell_path``). The benches of
    # run_in_process and of the coroutines ask for it; the background, GUI and progress benches
    # have always run with the PATH this bench was started with (their figures stay comparable).

    def _part(self, part: Part) -> tuple[list[str], Path]:
        """The arguments that make bench/_harness.py run ``part``, and the file it writes."""
        module = Path(inspect.getfile(part)).stem  # its file's name, also when it is __main__
        out = self.scratch / f"{module}.{part.__name__}.json"
        return [module, part.__name__, str(out), *(["--quick"] if self.quick else [])], out

    def background(self, label: str, part: Part, timeout: float, from_shell: bool = False) -> dict:
        """``part`` in ``blender --background``; returns what it wrote."""
        args, out = self._part(part)
        command = [*self.blender, "--background", "--factory-startup", "--python-exit-code", "1"]
        return run_blender(label, [*command, "--python", str(HARNESS), "--", *args], out, timeout, {}, from_shell)

    def ui(self, label: str, part: Part, timeout: float, from_shell: bool = False) -> dict:
        """``part`` in Blender's UI under Xvfb, with a user folder of its own (the user's Blender
        config, recent files and all, stays untouched); returns what it wrote."""
        args, out = self._part(part)
        user = self.scratch / f"{out.stem}.user"
        user.mkdir()
        command = ui_command(self.xvfb_run, self.blender, HARNESS, *args)
        return run_blender(label, command, out, timeout, {"BLENDER_USER_RESOURCES": str(user)}, from_shell)

    def python(self, label: str, python: Path | str, part: Part, timeout: float, from_shell: bool = False) -> dict:
        """``part`` in a plain Python (a venv with the bpy wheel); returns what it wrote."""
        args, out = self._part(part)
        return run_blender(label, [str(python), str(HARNESS), *args], out, timeout, {}, from_shell)


def inside(argv: list[str]) -> None:
    """Inside Blender (or a Python with bpy): run one part of a bench."""
    parser = argparse.ArgumentParser(prog="bench/_harness.py", description="Run one part of a bench.")
    parser.add_argument("module", help="the bench, e.g. bench_gui")
    parser.add_argument("part", help="its function that runs here, e.g. inside_ui")
    parser.add_argument("out", type=Path, help="the JSON file it writes")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for folder in (ROOT, BENCH):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    getattr(importlib.import_module(args.module), args.part)(args.out, args.quick)


def step_in_ui(steps: Iterator[float | None], out: Path, result: dict) -> None:
    """Inside Blender's UI: run ``steps`` from a timer, one step per call, each yielding the seconds
    to wait before the next (None: the next event-loop pass), so that the UI keeps drawing. Then
    write ``result`` to ``out``, with the traceback under ``"error"`` if a step raised, and quit."""
    import bpy

    def drive() -> float | None:
        try:
            interval = next(steps)
        except StopIteration:
            pass
        except BaseException:  # noqa: BLE001 - reported through the file, then quit
            result["error"] = traceback.format_exc()
        else:
            return 0.0 if interval is None else interval
        out.write_text(json.dumps(result))
        bpy.context.preferences.view.use_save_prompt = False  # else quitting asks to save changes
        bpy.ops.wm.quit_blender()
        return None

    bpy.app.timers.register(drive, first_interval=0.0, persistent=True)


# -- measuring -------------------------------------------------------------------------------------


def percentiles(values: Sequence[float], top: int = 0) -> dict:
    """p50, p99, max and n of ``values``; with ``top``, the ``top`` largest too (``"top5"``)."""
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    figures: dict = {"p50": pick(0.50), "p99": pick(0.99), "max": ordered[-1], "n": len(ordered)}
    if top:
        figures[f"top{top}"] = ordered[: -top - 1 : -1]
    return figures


def busy_wait(seconds: float) -> float:
    """Holds the thread (and the GIL) for ``seconds``, like a short bpy call would. Returns how far
    past its end it noticed the time: a few µs, unless the machine paused the thread (a busy-wait
    cannot overrun otherwise)."""
    clock = time.perf_counter
    end = clock() + seconds
    now = clock()
    while now < end:
        now = clock()
    return now - end


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


def rate(value: float) -> str:
    return f"{value / 1e6:.2f} M/s" if value >= 1e6 else f"{value / 1e3:.0f} k/s"


def duration(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def size(value: float) -> str:
    return f"{value:,.0f} B"


def percent(value: float) -> str:
    return f"{value:.2f} %"


def points(value: float) -> str:
    """Percentage points."""
    return f"{value:+.2f} pp"


def row(
    figure: str,
    value: float,
    fmt: Callable[[float], str],
    anchor: str,
    anchor_value: float,
    target: float | None = None,
    higher_is_better: bool = False,
) -> Row:
    """One line: a figure next to its anchor from the same run, and their ratio. ``target`` is the
    bound on value/anchor_value (None: shown for information)."""
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


def overhead_row(
    figure: str,
    overhead: dict,
    anchor: str,
    anchor_value: float,
    fmt: Callable[[float], str] = points,
    bound: float | None = None,
) -> Row:
    """One line for an overhead in percentage points of a core (``overhead``: "pp", its standard
    error "stderr", and the means' difference "pp_mean" if measured): no ratio. ``bound``: the most
    "pp" may be (None: shown for information)."""
    means = f"; means {points(overhead['pp_mean'])}" if "pp_mean" in overhead else ""
    return {
        "figure": figure,
        "value": f"{points(overhead['pp'])} (s.e. {overhead['stderr']:.2f}{means})",
        "anchor": anchor,
        "anchor_value": fmt(anchor_value),
        "ratio": "",
        "target": "" if bound is None else f"≤ {bound:g} pp",
        "result": "info" if bound is None else ("PASS" if overhead["pp"] <= bound else "MISS"),
        "raw": {"value": overhead["pp"], "anchor": anchor_value, "ratio": None},
    }


COLUMNS = ("figure", "value", "anchor", "anchor_value", "ratio", "target", "result")
HEADERS = ("figure", "value", "anchor (same run)", "anchor value", "ratio", "target", "result")


def print_table(rows: list[Row]) -> None:
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in zip(COLUMNS, HEADERS, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))


def markdown(rows: list[Row], info: dict) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    facts = [
        f"- Command: `{info['command']}` ({info['seconds']:.0f} s in all)",
        f"- Machine: {info['machine']['description']}; load average {info['machine']['load_average_at_start'][0]:.2f} "
        f"at the start, {info['load_average_at_end'][0]:.2f} at the end",
        f"- Blender {info['blender']} (Python {info['python']}), {info['date']}",
    ]
    return "\n".join(lines + [""] + facts) + "\n"


# -- the results files -----------------------------------------------------------------------------


def write_json(path: Path, data: dict) -> None:
    """Indented JSON, with every list of plain values (the raw samples) on one line."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    path.write_text(
        re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s+", ", ", m.group(1)) + "]", text) + "\n"
    )


def plots(json_path: Path, prefix: str = "") -> list[Path]:
    """The plots of a results file, drawn by bench/_plots.py with matplotlib in the bench's own venv
    (never inside Blender), named ``<prefix><plot>.png``. Returns the files written."""
    python = setup().bench_python()
    proc = subprocess.run(
        [str(python), str(BENCH / "_plots.py"), str(json_path), str(json_path.parent), prefix],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode:
        raise RuntimeError(f"the plots failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return [Path(line) for line in proc.stdout.split()]


# -- the command line ------------------------------------------------------------------------------


def arguments(argv: list[str], prog: str, doc: str, skips: Sequence[str], sid: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(sid=False, skip=[])
    parser.add_argument("--quick", action="store_true", help="a smoke run of the pipeline (figures not meaningful)")
    if sid:
        parser.add_argument(
            "--blender-5.2", dest="sid", action="store_true", help="Debian sid's Blender 5.2 LTS (the chroot)"
        )
    for part in skips:
        parser.add_argument(
            f"--skip-{part}", dest="skip", action="append_const", const=part, help=f"leave out the {part} part"
        )
    parser.add_argument("--report", action="store_true", help="the table again from the latest results file")
    return parser.parse_args(argv)


def measure(benches: Sequence[ModuleType], args: argparse.Namespace, prog: str, command: str) -> tuple[dict, dict]:
    """Run the benches that are not skipped, in order; return (info, results by bench)."""
    skip, sid = tuple(args.skip), args.sid
    chosen = [bench for bench in benches if bench.KEY not in skip]
    for bench in chosen:
        if sid and not bench.IN_SID_CHROOT:
            raise SystemExit(f"{prog}: the {bench.KEY} bench does not run in the sid chroot: add --skip-{bench.KEY}")
    blender, xvfb_run = blender_commands(sid)
    started = time.monotonic()
    info = {
        "command": command,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "quick": args.quick,
    }
    results: dict = {}
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mainthread_tasks-bench-") as scratch:
        context = Context(blender, xvfb_run, Path(scratch), args.quick, sid, skip)
        for bench in chosen:
            results[bench.KEY] = bench.run(context)
    some = next((result for result in results.values() if "blender" in result), {})
    info.update(
        seconds=time.monotonic() - started,
        load_average_at_end=os.getloadavg(),
        blender=some.get("blender", "?"),
        python=some.get("python", "?"),
    )
    return info, results


def report(benches: Sequence[ModuleType], info: dict, results: dict, name: str | None, table: bool) -> list[Row]:
    """Print the table and the notes; write ``<name>.json`` (unless ``name`` is None), with ``table``
    ``<name>.md``, and the plots if the results have any; return the rows."""
    rows = [line for bench in benches if bench.KEY in results for line in bench.rows(results[bench.KEY])]
    print_table(rows)
    written = []
    if name is not None:
        written.append(RESULTS / f"{name}.json")
        write_json(written[-1], {"info": info, "rows": rows, "results": results})
        if table:
            written.append(RESULTS / f"{name}.md")
            written[-1].write_text(markdown(rows, info))
    print(f"\n{info['machine']['description']}; Blender {info['blender']}; {info['seconds']:.0f} s")
    for bench in benches:
        if bench.KEY in results:
            for line in bench.notes(results[bench.KEY]):
                print(line)
    if name is not None and any(key in results for key in PLOTTED):
        written += plots(RESULTS / f"{name}.json", "" if name == "latest" else f"{name}-")
    if written:
        print("wrote " + ", ".join(str(path.relative_to(ROOT)) for path in written))
    return rows


def main(
    argv: list[str],
    script: str,
    doc: str,
    benches: Sequence[ModuleType],
    name: str,
    sid_name: str = "",
    skips: Sequence[str] = (),
    table: bool = False,
    quick_writes: bool = True,
) -> int:
    """The command of ``script`` (bench/run.py, or a bench run on its own): measure ``benches``
    (or, with ``--report``, read them back), print the table, write ``<name>.json`` (``sid_name``,
    default ``<name>-blender-5.2``, with ``--blender-5.2``), with ``table`` ``<name>.md``, the
    plots, nothing from a ``--quick`` run unless ``quick_writes``. ``skips``: the ``--skip-*``
    options. Exit status 1 if a target was missed."""
    prog = f"bench/{Path(script).name}"
    args = arguments(argv, prog, doc, skips, any(bench.IN_SID_CHROOT for bench in benches))
    name = (sid_name or f"{name}-blender-5.2") if args.sid else name
    if args.report:  # the table and the plots again from the latest results, measuring nothing
        path = RESULTS / f"{name}.json"
        latest = json.loads(path.read_text()) if path.exists() else {}
        if "info" not in latest:
            raise SystemExit(
                f"{prog}: {path.relative_to(ROOT)} is missing or older than this bench: run python3 {prog}"
            )
        info, results = latest["info"], latest["results"]
    else:
        info, results = measure(benches, args, prog, " ".join([f"python3 {prog}", *argv]))
    rows = report(benches, info, results, name if quick_writes or not args.quick else None, table)
    missed = [r["figure"] for r in rows if r["result"] == "MISS"]
    if missed:
        print(f"MISSED {len(missed)} target(s): " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":  # inside Blender, or a Python with bpy: one part of a bench
    inside(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:])
