"""The launcher: ``python3 -m mainthread_tasks.testing [kit options] [pytest args]`` (docs/testing.md).

For each ``--blender`` it runs the suite in sessions, each a fresh Blender with a fresh temporary user
folder (``BLENDER_USER_RESOURCES``: your own preferences and add-ons are never read or written) and the
``--addon``s installed there:

1. ``--background`` (or the ``bpy`` module's Python): every test but the ``gui`` ones;
2. Blender's UI, for the ``gui`` tests, if there are any: on ``$DISPLAY``, else on an Xvfb the
   launcher starts (and stops); with neither, or in the ``bpy`` module, those tests are skipped,
   with the reason, in the first session.

A session that dies (a signal, the watchdog of ``--test-timeout``) is reported: the test it was in
fails with "Blender crashed (...)" and the traceback faulthandler wrote, and the tests not run yet
run in a fresh Blender. The exit status is pytest's (the worst of the sessions'; 1 after a crash);
``--junitxml`` gets every test of every session, crashed ones included.

Standard library only, any Python >= 3.10: it never imports bpy nor pytest itself.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _junit

__all__ = ("main",)

KIT_DIR = Path(__file__).resolve().parent
SESSION_SCRIPT = KIT_DIR / "_session.py"
SESSION_ENV = "MAINTHREAD_TASKS_TESTING_SESSION"  # the plugin's name for it (plugin.SESSION_ENV)
#: How faulthandler's dump_traceback_later (the plugin's --test-timeout) starts its dump.
TIMEOUT_DUMP = "Timeout ("

#: pytest's exit statuses the launcher uses itself.
OK, TESTS_FAILED, INTERRUPTED, INTERNAL_ERROR, USAGE_ERROR, NO_TESTS = 0, 1, 2, 3, 4, 5

DEFAULT_TEST_TIMEOUT = 600.0  #: seconds: a test that runs longer is stopped like a crash
PROBE_TIMEOUT = 120.0  #: seconds for Blender to say its versions
EXIT_GRACE = 60.0  #: seconds Blender may take to quit after pytest finished
PIP_TIMEOUT = 600.0
XVFB_SCREEN = "1280x720x24"

#: pytest, at least the version whose hook wrappers the plugin uses.
PYTEST_REQUIREMENT = "pytest>=8.0"


class KitError(Exception):
    """Something the launcher needs is missing; the message says what to do."""


def _say(message: str) -> None:
    print(f"[mainthread_tasks.testing] {message}", flush=True)


# -- the command line -------------------------------------------------------------------------------


@dataclass
class Options:
    blenders: list[str]
    addons: list[Path]
    requirements: list[str]
    test_timeout: float
    xvfb: bool
    pytest_args: list[str]
    junitxml: Path | None


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python3 -m mainthread_tasks.testing",
        description="Run a pytest suite inside real Blender: every option not listed here goes to pytest.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--blender",
        action="append",
        default=[],
        metavar="PATH",
        help="a Blender executable, or a Python that has the bpy module (repeatable; default: $BLENDER, "
        "then blender on PATH)",
    )
    parser.add_argument(
        "--addon",
        action="append",
        default=[],
        metavar="PATH",
        type=Path,
        help="an add-on (folder, .py or zip) to install into the temporary user folder and enable (repeatable)",
    )
    parser.add_argument(
        "--with",
        dest="requirements",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="a package for Blender's Python besides pytest, e.g. pytest-mock (repeatable)",
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=DEFAULT_TEST_TIMEOUT,
        metavar="SECONDS",
        help=f"a test that runs longer ends its Blender and is reported (default {DEFAULT_TEST_TIMEOUT:g}; 0: never)",
    )
    parser.add_argument(
        "--xvfb", action="store_true", help="run the gui tests on an Xvfb of the kit's even when $DISPLAY is set"
    )
    known, rest = parser.parse_known_args(argv)
    pytest_args, junitxml = _take_junitxml(rest)
    if known.test_timeout < 0:
        parser.error("--test-timeout must be >= 0")
    return Options(
        known.blender, known.addon, known.requirements, known.test_timeout, known.xvfb, pytest_args, junitxml
    )


def _take_junitxml(args: list[str]) -> tuple[list[str], Path | None]:
    """pytest's --junitxml (also --junit-xml, =PATH or PATH): the launcher writes that file."""
    kept: list[str] = []
    path: Path | None = None
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--junitxml", "--junit-xml"):
            path = Path(value if eq else next(it, ""))
        else:
            kept.append(arg)
    return kept, path


# -- Blender ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blender:
    path: str
    kind: str  #: "binary" (a Blender executable) or "module" (a Python with the bpy module)
    version: str  #: bpy.app.version_string
    python: str  #: X.Y.Z of its Python

    @property
    def python_xy(self) -> str:
        return ".".join(self.python.split(".")[:2])

    def label(self) -> str:
        kind = "" if self.kind == "binary" else " (bpy module)"
        return f"Blender {self.version}{kind}"

    def command(self, mode: str) -> list[str]:
        if self.kind == "module":
            return [self.path, str(SESSION_SCRIPT)]
        background = ["--background"] if mode == "background" else []
        return [self.path, *background, "--factory-startup", "--python-exit-code", "3", "--python", str(SESSION_SCRIPT)]


_PROBE = (
    "import sys, json, bpy; print('MAINTHREAD_TASKS_PROBE=' + json.dumps("
    "[bpy.app.version_string, '%d.%d.%d' % sys.version_info[:3]]))"
)


def _is_python(path: str) -> bool:
    return re.fullmatch(r"python[0-9.]*(\.exe)?", Path(path).name.lower()) is not None


def find_blenders(given: list[str]) -> list[str]:
    if given:
        return given
    explicit = os.environ.get("BLENDER")
    if explicit:
        return [explicit]
    found = shutil.which("blender")
    if not found:
        raise KitError("no Blender: pass --blender PATH, or set $BLENDER, or put blender on PATH")
    return [found]


def probe(path: str, cache: Path) -> Blender:
    """Blender's and its Python's versions (a run of ``blender -b``, cached per executable)."""
    resolved = shutil.which(path) or path
    if not Path(resolved).is_file():
        raise KitError(f"--blender {path}: no such file")
    kind = "module" if _is_python(resolved) else "binary"
    stat = Path(resolved).stat()
    key = f"{Path(resolved).resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{kind}"
    store = cache / "blenders.json"
    known: dict[str, list[str]] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(store.read_text())
    if key not in known:
        if kind == "module":
            command = [resolved, "-c", _PROBE]
        else:
            command = [resolved, "--background", "--factory-startup", "--python-expr", _PROBE]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KitError(f"--blender {path}: could not run it ({exc})") from None
        line = next((line for line in out.splitlines() if line.startswith("MAINTHREAD_TASKS_PROBE=")), None)
        if line is None:
            what = "a Python with the bpy module" if kind == "module" else "Blender"
            raise KitError(f"--blender {path}: not {what}? It did not say its version:\n{out[-2000:]}")
        known[key] = json.loads(line.partition("=")[2])
        cache.mkdir(parents=True, exist_ok=True)
        _write_atomically(store, json.dumps(known, indent=1))
    version, python = known[key]
    return Blender(resolved, kind, version, python)


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


# -- pytest for Blender's Python ----------------------------------------------------------------------


def default_cache() -> Path:
    explicit = os.environ.get("MAINTHREAD_TASKS_TESTING_CACHE")
    if explicit:
        return Path(explicit)
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mainthread_tasks" / "testing"


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise KitError(f"--with {requirement!r}: not a requirement")
    return match.group(1)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _installed_here(requirement: str) -> Path | None:
    """Where the calling Python has ``requirement`` installed (``name``, ``name==X``, ``name>=X``)."""
    name = _requirement_name(requirement)
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    spec = requirement.strip()[len(name) :].strip()
    if spec:
        match = re.fullmatch(r"(==|>=)\s*([0-9][0-9A-Za-z.]*)", spec)
        if match is None:
            return None  # a specifier this check does not read: the cache decides
        have, want = _version_tuple(dist.version), _version_tuple(match.group(2))
        if (match.group(1) == "==" and dist.version != match.group(2)) or have < want:
            return None
    return Path(str(dist.locate_file(""))).resolve()


def pytest_paths(blender: Blender, requirements: list[str], cache: Path) -> tuple[list[str], str]:
    """The folders to put on Blender's sys.path for pytest (and ``requirements``), and where they
    came from: the calling Python's own packages when its version is Blender's Python's, else a
    folder in the cache made with ``pip install --target --python-version``."""
    wanted = [PYTEST_REQUIREMENT, *requirements]
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == blender.python_xy:
        places = [_installed_here(r) for r in wanted]
        if all(place is not None for place in places):
            folders = list(dict.fromkeys(str(place) for place in places))
            return folders, f"this Python's ({sys.executable})"
    stamp = hashlib.sha256("\n".join([blender.python_xy, sys.platform, *sorted(wanted)]).encode()).hexdigest()[:12]
    folder = cache / f"site-py{blender.python_xy}-{stamp}"
    if not (folder / ".complete").is_file():
        _pip_install(folder, blender.python_xy, wanted)
    return [str(folder)], f"the cache ({folder})"


def _pip_install(folder: Path, python_xy: str, requirements: list[str]) -> None:
    _say(f"installing {' '.join(requirements)} for Python {python_xy} into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", dir=folder.parent))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(temp),
        "--python-version",
        python_xy,
        "--only-binary=:all:",
        "--implementation",
        "cp",
        *requirements,
    ]
    try:
        subprocess.run(command, check=True, timeout=PIP_TIMEOUT, env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore"))
    except FileNotFoundError:
        raise KitError(f"{sys.executable} cannot run pip: run the launcher from a Python with pip (a venv)") from None
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise KitError(
            f"pip could not install {' '.join(requirements)} for Python {python_xy} ({exc}); without a "
            f"network, run the launcher from a Python {python_xy} that has them"
        ) from None
    (temp / ".complete").write_text(" ".join(requirements))
    try:
        os.replace(temp, folder)  # atomic: a run that finds it finds it complete
    except OSError:  # another run made it meanwhile
        shutil.rmtree(temp, ignore_errors=True)


# -- a display for the gui tests ------------------------------------------------------------------------


class Display:
    """Where the UI sessions run: the desktop's display, or an Xvfb the launcher starts on first use."""

    def __init__(self, force_xvfb: bool) -> None:
        self.force_xvfb = force_xvfb
        self.xvfb: subprocess.Popen[bytes] | None = None
        self.name: str | None = None
        self.why_not: str | None = None

    def environment(self) -> dict[str, str] | None:
        """The environment entries for a UI session, or None (then ``why_not`` says why)."""
        if not self.force_xvfb:
            if os.name == "nt" or sys.platform == "darwin":
                return {}
            if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
                return {}
        if self.name is None and self.why_not is None:
            self._start_xvfb()
        return None if self.name is None else {"DISPLAY": self.name}

    def _start_xvfb(self) -> None:
        xvfb = shutil.which("Xvfb")
        if xvfb is None:
            self.why_not = (
                "no display to run Blender's UI on: $DISPLAY is not set and Xvfb is not installed "
                "(Debian/Ubuntu: apt-get install xvfb)"
            )
            return
        read_end, write_end = os.pipe()
        self.xvfb = subprocess.Popen(
            [xvfb, "-displayfd", str(write_end), "-screen", "0", XVFB_SCREEN, "-nolisten", "tcp"],
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(write_end)
        number = b""
        with os.fdopen(read_end, "rb") as reader:
            number = reader.readline().strip()  # Xvfb writes its display number once it is ready
        if not number:
            self.close()
            self.why_not = "Xvfb did not start (run `Xvfb -displayfd 1` to see why)"
            return
        self.name = f":{number.decode()}"

    def close(self) -> None:
        if self.xvfb is not None:
            self.xvfb.terminate()
            try:
                self.xvfb.wait(10)
            except subprocess.TimeoutExpired:
                self.xvfb.kill()
            self.xvfb = None


# -- sessions --------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What the plugin wrote to the progress file (see plugin.py), read after the session."""

    collected: int | None = None
    gui_tests: int = 0
    started: list[str] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reset_seconds: list[float] = field(default_factory=list)  #: each test's fresh scene
    check_seconds: list[float] = field(default_factory=list)  #: each test's snapshots and checks
    exitstatus: int | None = None
    first_start: float | None = None  #: when the first test started (time.monotonic of the launcher)

    @classmethod
    def read(cls, path: Path) -> Progress:
        progress = cls()
        if not path.exists():
            return progress
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by the crash
            if "collected" in record:
                progress.collected = record["collected"]
                progress.gui_tests = record["gui_tests"]
            elif "start" in record:
                progress.started.append(record["start"])
            elif "finish" in record:
                progress.finished.add(record["finish"])
            elif "report" in record:
                progress.reports.setdefault(record["report"]["nodeid"], []).append(record["report"])
            elif "kit_seconds" in record:
                reset, checks = record["kit_seconds"]
                progress.reset_seconds.append(reset)
                progress.check_seconds.append(checks)
            elif "exitstatus" in record:
                progress.exitstatus = record["exitstatus"]
        return progress


@dataclass
class SessionResult:
    code: int  #: pytest's exit status (TESTS_FAILED after a crash)
    progress: Progress
    cases: list[Any]  #: JUnit test cases
    suite_name: str
    crash: str | None  #: what happened, if Blender died
    crashed_test: str | None
    startup_seconds: float | None  #: from launching Blender to its first test


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Run:
    """One launcher run: its temporary folder, its options, what each session gave."""

    def __init__(self, options: Options, work: Path) -> None:
        self.options = options
        self.work = work
        self.sessions = 0
        self.display = Display(options.xvfb)
        self.cov = _wants_coverage(options.pytest_args)

    def session(
        self,
        blender: Blender,
        mode: str,
        sys_path: list[str],
        deselect: list[str],
        gui_skip: str | None,
        extra_env: dict[str, str],
    ) -> SessionResult:
        self.sessions += 1
        folder = self.work / f"session-{self.sessions}"
        user = folder / "user"
        for sub in ("config", "scripts", "datafiles", "extensions/user_default", "extensions/blender_org"):
            (user / sub).mkdir(parents=True)
        part = folder / "junit.xml"
        args = [*self.options.pytest_args, f"--junitxml={part}"]
        if self.cov and self.sessions > 1:
            args.append("--cov-append")  # one coverage total over every session of the run
        config: dict[str, Any] = {
            "mode": mode,
            "args": args,
            "sys_path": sys_path,
            "addons": [str(path.resolve()) for path in self.options.addons],
            "progress": str(folder / "progress.jsonl"),
            "fault": str(folder / "fault.txt"),
            "deselect": deselect,
            "test_timeout": self.options.test_timeout,
            "gui_skip": gui_skip,
        }
        (folder / "session.json").write_text(json.dumps(config))
        # Blender's user folders (config, scripts, datafiles, extensions) all in the temporary one:
        # yours are never read nor written. The more specific BLENDER_USER_* variables would win over
        # it, so they go (a studio may set BLENDER_USER_SCRIPTS); a Blender that a test starts can
        # then have a user folder of its own by setting BLENDER_USER_RESOURCES alone.
        env = {key: value for key, value in os.environ.items() if not key.startswith("BLENDER_USER_")}
        env.update({SESSION_ENV: str(folder / "session.json"), "BLENDER_USER_RESOURCES": str(user), **extra_env})
        command = blender.command(mode)
        where = {"background": "--background", "gui": "the UI", "module": "the bpy module"}[mode]
        _say(f"{blender.label()} in {where}: {shlex.join(command)}")
        launched = time.monotonic()
        proc = subprocess.Popen(command, env=env)
        code, quit_late, first_test = self._wait(proc, Path(config["progress"]))
        progress = Progress.read(Path(config["progress"]))
        startup = None if first_test is None else first_test - launched
        return self._result(blender, mode, code, quit_late, progress, part, Path(config["fault"]), startup)

    def _wait(self, proc: subprocess.Popen[bytes], progress: Path) -> tuple[int, bool, float | None]:
        """Wait for Blender; end it if it does not quit within EXIT_GRACE after pytest finished.
        Returns its exit status, whether it had to be ended, and when its first test started."""
        first_test: float | None = None
        finished_at: float | None = None
        try:
            while True:
                try:
                    return proc.wait(0.05), False, first_test
                except subprocess.TimeoutExpired:
                    pass
                if first_test is None and _has(progress, '"start"'):
                    first_test = time.monotonic()
                if finished_at is None and _has(progress, '"exitstatus"'):
                    finished_at = time.monotonic()
                if finished_at is not None and time.monotonic() - finished_at > EXIT_GRACE:
                    proc.kill()
                    return proc.wait(), True, first_test
        except BaseException:  # Ctrl-C: Blender goes too
            proc.kill()
            proc.wait()
            raise

    def _result(
        self,
        blender: Blender,
        mode: str,
        code: int,
        quit_late: bool,
        progress: Progress,
        part: Path,
        fault: Path,
        startup: float | None,
    ) -> SessionResult:
        crashed = [nodeid for nodeid in progress.started if nodeid not in progress.finished]
        crashed_test = crashed[-1] if crashed else None
        fault_text = fault.read_text(encoding="utf-8", errors="replace") if fault.exists() else ""
        if progress.exitstatus is not None and code == progress.exitstatus and not quit_late:
            suite_name, cases = _junit.read_part(part) if part.exists() else ("pytest", [])
            return SessionResult(code, progress, cases, suite_name, None, None, startup)
        if code in (INTERRUPTED, INTERNAL_ERROR, USAGE_ERROR) and not progress.started and not quit_late:
            # pytest stopped before the session began (an add-on that failed to enable, a bad
            # option): its message is above; nothing ran, nothing crashed.
            return SessionResult(code, progress, [], "pytest", None, None, startup)
        # Blender died, or pytest's report is missing: rebuild what ran from the progress file.
        if fault_text.startswith(TIMEOUT_DUMP) and crashed_test is not None:
            crash = f"the test ran longer than {self.options.test_timeout:g} s (--test-timeout): Blender was stopped"
        elif code < 0:
            crash = f"Blender crashed ({_signal_name(-code)})"
        elif code > 128 and os.name != "nt":  # a shell in between (a wrapper script) reports 128 + N
            crash = f"Blender crashed ({_signal_name(code - 128)})"
        elif quit_late:
            crash = f"Blender did not quit within {EXIT_GRACE:g} s after the tests"
        else:
            crash = f"Blender exited with status {code} before pytest finished"
        cases = [
            _junit.reported_case(nodeid, progress.reports.get(nodeid, []))
            for nodeid in progress.started
            if nodeid in progress.finished
        ]
        detail = fault_text.strip() or "(no traceback was written)"
        if crashed_test is not None:
            seconds = sum(float(r.get("duration", 0.0)) for r in progress.reports.get(crashed_test, []))
            cases.append(_junit.crashed_case(crashed_test, f"{crash} during this test", detail, seconds))
        else:
            place = "after the tests" if progress.exitstatus is not None else "outside any test"
            cases.append(
                _junit.crashed_case(f"mainthread_tasks.testing::{blender.label()} {mode}", f"{crash} {place}", detail)
            )
        _say(f"{blender.label()}: {crash}" + (f" in {crashed_test}" if crashed_test else ""))
        if detail:
            print(detail, file=sys.stderr, flush=True)
        return SessionResult(TESTS_FAILED, progress, cases, "pytest", crash, crashed_test, startup)


def _has(path: Path, text: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return text in handle.read()
    except OSError:
        return False


@dataclass
class ModeOutcome:
    """The sessions of one Blender in one mode (a crash adds one more)."""

    blender: Blender
    mode: str
    results: list[SessionResult] = field(default_factory=list)

    @property
    def code(self) -> int:
        return _combine([result.code for result in self.results])


def _combine(codes: list[int]) -> int:
    """One exit status for several pytest runs: the worst; 5 (no tests) only if every run had none."""
    real = [code for code in codes if code != NO_TESTS]
    if not real:
        return NO_TESTS if codes else OK
    return max(real)


def _run_mode(
    run: Run, blender: Blender, mode: str, sys_path: list[str], gui_skip: str | None, env: dict[str, str]
) -> ModeOutcome:
    """Sessions of one mode until every test ran: after a crash, the rest in a fresh Blender."""
    outcome = ModeOutcome(blender, mode)
    done: list[str] = []
    while True:
        result = run.session(blender, mode, sys_path, done, gui_skip, env)
        outcome.results.append(result)
        if result.crash is None:
            return outcome
        done += [nodeid for nodeid in result.progress.started if nodeid not in done]
        left = (result.progress.collected or 0) - len(result.progress.started)
        if result.crashed_test is None or left <= 0 or _exit_first(run.options.pytest_args):
            return outcome
        _say(f"{blender.label()}: running the {left} test(s) not run yet in a fresh Blender")


def _wants_coverage(args: list[str]) -> bool:
    return any(arg == "--cov" or arg.startswith("--cov=") for arg in args)


def _exit_first(args: list[str]) -> bool:
    return "-x" in args or "--exitfirst" in args


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    try:
        return _main(options)
    except KitError as exc:
        _say(f"error: {exc}")
        return USAGE_ERROR
    except KeyboardInterrupt:
        _say("interrupted")
        return INTERRUPTED


def _main(options: Options) -> int:
    cache = default_cache()
    requirements = list(options.requirements)
    if _wants_coverage(options.pytest_args):
        if not any(_requirement_name(r).lower() == "pytest-cov" for r in requirements):
            requirements.append("pytest-cov")  # --cov is pytest-cov's: Blender's Python needs it too
    for addon in options.addons:
        if not addon.exists():
            raise KitError(f"--addon {addon}: no such file or folder")
    blenders = [probe(path, cache) for path in find_blenders(options.blenders)]
    outcomes: list[ModeOutcome] = []
    with _work_folder() as work:
        run = Run(options, work)
        try:
            for blender in blenders:
                sys_path, origin = pytest_paths(blender, requirements, cache)
                _say(f"{blender.label()} ({blender.path}), Python {blender.python}; pytest from {origin}")
                outcomes += _run_blender(run, blender, sys_path)
                if _exit_first(options.pytest_args) and any(o.code not in (OK, NO_TESTS) for o in outcomes):
                    break
        finally:
            run.display.close()
    code = _combine([outcome.code for outcome in outcomes])
    if options.junitxml is not None:
        _write_junit(options.junitxml, outcomes)
    _summary(outcomes, code)
    return code


def _run_blender(run: Run, blender: Blender, sys_path: list[str]) -> list[ModeOutcome]:
    if blender.kind == "module":
        return [_run_mode(run, blender, "module", sys_path, "the bpy module has no UI to run gui tests in", {})]
    # The first session leaves the gui tests to a UI session, unless there cannot be one.
    display_env = run.display.environment()
    gui_skip = run.display.why_not if display_env is None else None
    outcomes = [_run_mode(run, blender, "background", sys_path, gui_skip, {})]
    gui_tests = max((result.progress.gui_tests for result in outcomes[0].results), default=0)
    if display_env is not None and gui_tests:
        if not (_exit_first(run.options.pytest_args) and outcomes[0].code not in (OK, NO_TESTS)):
            outcomes.append(_run_mode(run, blender, "gui", sys_path, None, display_env))
    return outcomes


@contextlib.contextmanager
def _work_folder() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="mainthread_tasks-testing-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the add-on links in it are unlinked, never followed


def _write_junit(path: Path, outcomes: list[ModeOutcome]) -> None:
    suites = []
    for outcome in outcomes:
        names = {result.suite_name for result in outcome.results if result.crash is None} or {"pytest"}
        suite = _junit.Suite(
            f"{sorted(names)[0]} [{outcome.blender.label()}, {outcome.mode}]",
            {
                "blender": outcome.blender.version,
                "blender_path": outcome.blender.path,
                "python": outcome.blender.python,
                "mode": outcome.mode,
            },
        )
        for result in outcome.results:
            suite.cases += result.cases
        suites.append(suite)
    _junit.write(path, suites)


def _summary(outcomes: list[ModeOutcome], code: int) -> None:
    print(flush=True)
    _say("summary")
    for outcome in outcomes:
        resets: list[float] = []
        checks: list[float] = []
        startups: list[float] = []
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for result in outcome.results:
            for case in result.cases:
                kind = "failed" if case.find("failure") is not None or case.find("error") is not None else None
                kind = kind or ("skipped" if case.find("skipped") is not None else "passed")
                counts[kind] += 1
            resets += result.progress.reset_seconds
            checks += result.progress.check_seconds
            if result.startup_seconds is not None:
                startups.append(result.startup_seconds)
        crashes = [f"{r.crash} in {r.crashed_test or 'no test'}" for r in outcome.results if r.crash]
        line = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        sessions = f"{len(outcome.results)} session(s)"
        print(f"  {outcome.blender.label()} ({outcome.blender.path}), {outcome.mode}: {line}; {sessions}", flush=True)
        for crash in crashes:
            print(f"    {crash}", flush=True)
        if resets and startups:
            print(
                f"    the kit's cost: {statistics.median(startups):.2f} s from start-up to the first test; per test "
                f"{1000 * statistics.median(resets):.1f} ms fresh scene + {1000 * statistics.median(checks):.1f} ms "
                "checks (medians)",
                flush=True,
            )
    print(f"  exit status {code}", flush=True)
