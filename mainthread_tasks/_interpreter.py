"""The interpreter that worker processes run: one of Blender's Python version, found once (no bpy).

``sys.executable`` names the wrong program in some Blender builds (Debian's 3.4.1: another Python;
official builds: Blender itself on some systems), so the candidates are probed: each must run
Blender's major.minor (pickles and compiled modules must match), and one of Blender's own
installation (``sys.prefix``) is preferred. A cluster pool's broker runs this one too unless told
``python=``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

__all__ = ("PROBE_TIMEOUT", "check", "interpreter")

#: How long the version check of a candidate interpreter may take.
PROBE_TIMEOUT = 10.0

_WINDOWS = sys.platform == "win32"

_python: str | None = None
_python_error: str | None = None
_python_lock = threading.Lock()  # must be held while looking for the interpreter

_PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.prefix)"


def _candidates() -> list[str]:
    version = "{}.{}".format(*sys.version_info[:2])
    names = ("python.exe",) if _WINDOWS else (f"python{version}", "python3")
    found = [sys.executable, getattr(sys, "_base_executable", None)]
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
        if _WINDOWS:  # python.org's layout, then Blender's (<version>\python\bin\python.exe)
            found.append(os.path.join(prefix, "python.exe"))
        found.extend(os.path.join(prefix, "bin", name) for name in names)
    found.extend(shutil.which(name) for name in names)
    return list(dict.fromkeys(path for path in found if path))


def _probe(path: str) -> tuple[str, str] | str:
    """``(major.minor, sys.prefix)`` of the interpreter at ``path``, or why it cannot serve."""
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return "not an executable file"
    if os.path.basename(os.path.realpath(path)).lower().startswith("blender"):
        return "Blender itself, not a Python interpreter"
    try:
        proc = subprocess.run(
            [path, "-I", "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROBE_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not run: {exc}"
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) != 2:
        return f"exited with status {proc.returncode}: {proc.stderr.strip()[-200:]!r}"
    return lines[0], lines[1]


def _find_interpreter() -> tuple[str | None, str]:
    """The interpreter for the children, or None and what was tried.

    It must run Blender's Python version (major.minor: pickles and compiled modules must match);
    one with Blender's own ``sys.prefix`` is preferred (the same standard library), else the first
    of the right version. Candidates: ``sys.executable``, ``sys._base_executable``, ``pythonX.Y``
    and ``python3`` in ``<prefix>/bin`` and on ``PATH`` (Windows: ``python.exe`` in ``<prefix>``,
    ``<prefix>\bin`` and on ``PATH``). Blender's official builds for Windows and macOS set
    ``sys.executable`` to the Python they bundle.
    """
    version = "{}.{}".format(*sys.version_info[:2])
    prefix = os.path.realpath(sys.prefix)
    fallback = None
    tried = []
    for path in _candidates():
        outcome = _probe(path)
        if isinstance(outcome, str):
            tried.append(f"{path}: {outcome}")
            continue
        found_version, found_prefix = outcome
        if found_version != version:
            tried.append(f"{path}: Python {found_version}")
            continue
        if os.path.realpath(found_prefix) == prefix:
            return path, ""
        tried.append(f"{path}: Python {found_version} of another installation ({found_prefix})")
        fallback = fallback or path
    return fallback, "; ".join(tried)


def interpreter() -> str:
    """The path of the children's interpreter, found once. Any thread.

    Raises:
        RuntimeError: no interpreter of Blender's Python version was found (says what was tried).
    """
    global _python, _python_error
    if _python is None:
        with _python_lock:
            if _python is None and _python_error is None:
                path, tried = _find_interpreter()
                if path is None:
                    _python_error = (
                        f"run_in_process needs a Python {sys.version_info[0]}.{sys.version_info[1]} interpreter "
                        f"(Blender runs Python {sys.version.split()[0]}) for its worker processes and found none; "
                        f"tried: {tried or 'nothing'}. Install python{sys.version_info[0]}.{sys.version_info[1]} "
                        "or put it on PATH"
                    )
                else:
                    _python = path
    if _python is None:
        raise RuntimeError(_python_error)
    return _python


_checked: set[str] = set()  # interpreters given as python= that run Blender's Python version


def check(path: str) -> None:
    """Make sure ``path`` (a local pool's ``python=``) runs Blender's Python version. Any thread.

    Raises:
        RuntimeError: it does not run, or runs another version.
    """
    if path in _checked:
        return
    version = "{}.{}".format(*sys.version_info[:2])
    outcome = _probe(path)
    if isinstance(outcome, str) or outcome[0] != version:
        why = outcome if isinstance(outcome, str) else f"it runs Python {outcome[0]}"
        raise RuntimeError(
            f"ProcessPool(python={path!r}): worker processes need an interpreter of Blender's Python {version}; {why}"
        )
    _checked.add(path)
