"""Get the real components the tests and the demo need, on a fresh machine too.

- Blender 3.4.1: ``$BLENDER`` if set, else ``blender`` on PATH, else Debian's package (apt-get, as
  root) together with Xvfb for the GUI tier.
- Python environments under ``$MAINTHREAD_TASKS_CACHE`` (default ``~/.cache/mainthread_tasks``):
  ``venv-dev`` (test tools + fake-bpy-module), ``venv-bpy-<version>`` (the bpy wheel + test tools),
  ``venv-docs`` (MkDocs for scripts/docs.py), ``venv-bench`` (matplotlib for the bench's plots),
  ``blender-site-py<X.Y>`` (test tools for the Blender binary's own Python, via ``pip --target``).
  Each is rebuilt when its requirements change.

Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MAINTHREAD_TASKS_CACHE", Path.home() / ".cache" / "mainthread_tasks"))
TEST_REQUIREMENTS = ROOT / "tests" / "requirements.txt"
# setuptools >= 70.1 builds wheels without the separate `wheel` package.
BUILD_REQUIREMENTS = ["setuptools==80.9.0"]
# The documentation site (scripts/docs.py): MkDocs, its Material theme, the API pages from docstrings.
# griffe-sphinx reads the ``#:`` comments that document attributes (the fields of Stats).
DOCS_REQUIREMENTS = ["mkdocs==1.6.1", "mkdocs-material==9.8.1", "mkdocstrings==1.0.8",
                     "mkdocstrings-python==2.0.11", "griffe==2.4.1", "griffe-sphinx==0.3.1",
                     "pymdown-extensions==13.1"]
# The benchmark's plots (bench/_plots.py runs in this venv, never inside Blender).
BENCH_REQUIREMENTS = ["matplotlib==3.11.2"]
APT_PACKAGES = ["blender", "xvfb", "xauth"]


class SetupError(RuntimeError):
    """A component could not be installed; the message says what to do."""


def log(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def _run(cmd: list[str], **kwargs) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SetupError(
            f"need {' '.join(packages)}: install them (Debian/Ubuntu: sudo apt-get install "
            f"{' '.join(packages)}) or set BLENDER=/path/to/blender"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env)


def blender_executable() -> str:
    """Path of the Blender binary: $BLENDER, else PATH, else installed from Debian's packages."""
    explicit = os.environ.get("BLENDER")
    if explicit:
        if not (shutil.which(explicit) or Path(explicit).is_file()):
            raise SetupError(f"BLENDER={explicit} does not exist")
        return shutil.which(explicit) or explicit
    found = shutil.which("blender")
    if found:
        return found
    log("Blender not found: installing Debian's blender package")
    _apt_install(APT_PACKAGES)
    found = shutil.which("blender")
    if not found:
        raise SetupError("apt-get installed blender but it is not on PATH")
    return found


def xvfb_run() -> str:
    found = shutil.which("xvfb-run")
    if not found:
        log("xvfb-run not found: installing Xvfb")
        _apt_install(["xvfb", "xauth"])
        found = shutil.which("xvfb-run")
    if not found:
        raise SetupError("xvfb-run is still missing after apt-get install xvfb")
    return found


def _stamp(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _fresh(folder: Path, stamp: str) -> bool:
    return (folder / ".mainthread_tasks-stamp").is_file() and (folder / ".mainthread_tasks-stamp").read_text() == stamp


def _mark(folder: Path, stamp: str) -> None:
    (folder / ".mainthread_tasks-stamp").write_text(stamp)


def venv_python(name: str, requirements: list[str]) -> Path:
    """A venv under the cache with ``requirements`` installed; returns its python."""
    folder = CACHE / name
    python = folder / "bin" / "python"
    stamp = _stamp(sys.version, *requirements)
    if _fresh(folder, stamp) and python.exists():
        return python
    log(f"creating {folder} ({' '.join(requirements)})")
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        venv.create(folder, with_pip=True)
    except Exception as exc:  # Debian's python3 without python3-venv
        shutil.rmtree(folder, ignore_errors=True)
        _apt_install(["python3-venv"])
        venv.create(folder, with_pip=True)
        log(f"venv needed python3-venv ({exc})")
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements])
    _mark(folder, stamp)
    return python


def test_requirements() -> list[str]:
    lines = TEST_REQUIREMENTS.read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def dev_python() -> Path:
    """Plain CPython with the test tools and fake-bpy-module."""
    return venv_python("venv-dev", test_requirements())


def build_python() -> Path:
    """A venv with the build backend named in pyproject.toml, for ``scripts/build.py --wheel``."""
    return venv_python("venv-build", BUILD_REQUIREMENTS)


def docs_python() -> Path:
    """A venv with MkDocs, Material and mkdocstrings, for ``scripts/docs.py``, and the test tools
    for the ``docs`` tier (tests/test_docs.py; the suite's fixtures patch fake-bpy-module)."""
    return venv_python("venv-docs", [*DOCS_REQUIREMENTS, *test_requirements()])


def bench_python() -> Path:
    """A venv with matplotlib, for the benchmark's plots."""
    return venv_python("venv-bench", BENCH_REQUIREMENTS)


def bpy_python(version: str) -> Path:
    """A venv with the ``bpy`` wheel (Blender as a Python module) and the test tools."""
    tools = [r for r in test_requirements() if not r.startswith("fake-bpy-module")]
    return venv_python(f"venv-bpy-{version}", [f"bpy=={version}", *tools])


def blender_python_version(blender: str) -> str:
    out = subprocess.run(
        [blender, "--background", "--factory-startup", "--python-expr",
         "import sys; print('PYVER=%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, timeout=120,
    ).stdout
    for line in out.splitlines():
        if line.startswith("PYVER="):
            return line.split("=", 1)[1]
    raise SetupError(f"could not read the Python version of {blender}:\n{out}")


def blender_site(blender: str) -> Path:
    """Test tools for the Blender binary's own Python (it is not a venv), via pip --target."""
    pyver = blender_python_version(blender)
    tools = [r for r in test_requirements() if not r.startswith("fake-bpy-module")]
    folder = CACHE / f"blender-site-py{pyver}"
    stamp = _stamp(pyver, *tools)
    if _fresh(folder, stamp):
        return folder
    log(f"installing test tools for Blender's Python {pyver} into {folder}")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _run([str(dev_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(folder),
          "--python-version", pyver, "--only-binary=:all:", "--implementation", "cp", *tools])
    _mark(folder, stamp)
    return folder
