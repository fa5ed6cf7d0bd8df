"""Which Blender the launcher runs, what it says of itself, and pytest for its Python."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._kit import PIP_TIMEOUT, PROBE_TIMEOUT, PYTEST_REQUIREMENT, SESSION_SCRIPT, KitError, _say

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
