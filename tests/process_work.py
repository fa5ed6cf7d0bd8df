"""Functions the run_in_process tests send to worker processes (a module the workers can import)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def concat(a, b):
    return a + b


def pid():
    return os.getpid()


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def busy(seconds):
    """Spin the CPU for ``seconds``; return this process's id."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return os.getpid()


def environment():
    """What the worker sees: its sys.path, whether bpy or the parent's __main__ are loaded."""
    main = sys.modules.get("__main__")
    return {
        "sys_path": list(sys.path),
        "bpy_loaded": "bpy" in sys.modules,
        "main_file": getattr(main, "__file__", None),
        "version": tuple(sys.version_info[:2]),
        "prefix": sys.prefix,
    }


def import_bpy():
    import bpy  # noqa: F401 - fails in a worker process

    return "imported"


class CustomError(Exception):
    pass


class NeedsTwoArgs(Exception):
    """Pickles, but does not unpickle (BaseException.__reduce__ passes only ``args``)."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def fail(kind, text):
    if kind == "value":
        raise ValueError(text)
    if kind == "custom":
        raise CustomError(text)
    if kind == "two_args":
        raise NeedsTwoArgs(text, "more")
    raise RuntimeError(text)


def fail_long(size):
    raise ValueError("x" * size)


def exit_hard(code):
    os._exit(code)


def crash():
    """A real crash: SIGSEGV on POSIX, an access violation (0xC0000005) on Windows."""
    import ctypes

    ctypes.c_char.from_address(16).value  # noqa: B018 - a read at address 16 (0 reads as NULL; not a foreign call, whose fault ctypes would catch on Windows)


def unpicklable_result():
    return lambda: None


def big_result(size):
    return b"x" * size


def sum_of_squares(n):
    """Pure-Python CPU work (the benchmark's and the example's kind)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


# -- what a task may do to its worker's pipes -----------------------------------------------------

WINDOWS = sys.platform == "win32"


def _worker_pipes():
    """This worker's ``(task fd, result fd)``."""
    return sys.modules["__main__"].pipes


def _python_sleeping(seconds, pidfile=None):
    """A command: Python sleeping ``seconds`` (writing its pid to ``pidfile`` first, if given)."""
    code = f"import os, time\nif {pidfile!r}: open({pidfile!r}, 'w').write(str(os.getpid()))\ntime.sleep({seconds})"
    return [sys.executable, "-I", "-c", code]


_helpers = []  # the helper processes started here, kept so no Popen is collected while they run

HELPER_SECONDS = 60


def start_helper(how, pidfile):
    """Start a process that outlives this task; write its pid to ``pidfile``; return this worker's pid.

    ``how``: "os.system" (a shell runs it in the background: it inherits what is inheritable),
    "fork" (a copy of this process, as multiprocessing's fork makes; POSIX), "handed on" (the
    worker's pipes passed to it on purpose: what a C library that forks without exec would keep).
    """
    if how == "os.system":
        if WINDOWS:  # cmd.exe's background start; the helper writes its own pid
            os.system(subprocess.list2cmdline(["start", "/b", "", *_python_sleeping(HELPER_SECONDS, pidfile)]))
            _wait_for_file(pidfile)
        else:
            os.system(f"sleep {HELPER_SECONDS} & echo $! > {shlex.quote(pidfile)}")
        return os.getpid()
    if how == "fork":
        helper = os.fork()
        if helper == 0:
            time.sleep(HELPER_SECONDS)
            os._exit(0)
    elif how == "handed on":
        proc = _popen_holding(_python_sleeping(HELPER_SECONDS), _worker_pipes())
        _helpers.append(proc)
        helper = proc.pid
    else:
        raise ValueError(how)
    with open(pidfile, "w") as fh:
        fh.write(str(helper))
    return os.getpid()


def _popen_holding(command, fds, **kwargs):
    """Start ``command`` holding the pipes ``fds`` (inherited on purpose)."""
    if not WINDOWS:
        return subprocess.Popen(command, pass_fds=fds, **kwargs)
    import msvcrt

    handles = [msvcrt.get_osfhandle(fd) for fd in fds]
    for handle in handles:
        os.set_handle_inheritable(handle, True)
    try:
        info = subprocess.STARTUPINFO(lpAttributeList={"handle_list": handles})
        return subprocess.Popen(command, close_fds=True, startupinfo=info, **kwargs)
    finally:
        for handle in handles:
            os.set_handle_inheritable(handle, False)


def _wait_for_file(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) or not open(path).read():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not written")
        time.sleep(0.01)


def start_helper_then_exit(how, pidfile, code, delay=0.0):
    """``start_helper``, then this worker ends with status ``code`` (after ``delay`` seconds)."""
    start_helper(how, pidfile)
    time.sleep(delay)
    os._exit(code)


_HOLDS = """
import os, sys
held = []
for arg in sys.argv[1:]:
    name, fd, dev, ino = arg.split(":")
    try:
        st = os.fstat(int(fd))
    except OSError:
        continue
    if (st.st_dev, st.st_ino) == (int(dev), int(ino)):
        held.append(name)
print(" ".join(held))
"""


def pipes_held_by(how):
    """Which of this worker's pipes ("task", "result") a process that the task starts holds.

    ``how``: "exec" (what os.system, subprocess with close_fds=False and C libraries that exec do)
    or "fork" (a copy of this process, as multiprocessing's fork makes). On Windows, where a new
    process gets a handle only by inheriting it, "exec" names the pipes whose handle is inheritable.
    """
    if WINDOWS and how == "exec":
        import msvcrt

        pipes = zip(("task", "result"), _worker_pipes(), strict=True)
        return [name for name, fd in pipes if os.get_handle_inheritable(msvcrt.get_osfhandle(fd))]
    pipes = [(name, fd, os.fstat(fd)) for name, fd in zip(("task", "result"), _worker_pipes(), strict=True)]
    if how == "exec":
        args = [f"{name}:{fd}:{st.st_dev}:{st.st_ino}" for name, fd, st in pipes]
        command = [sys.executable, "-I", "-c", _HOLDS, *args]
        return subprocess.run(command, close_fds=False, capture_output=True, text=True, check=True).stdout.split()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        held = [name for name, fd, st in pipes if _same_file(fd, st)]
        os.write(write_end, " ".join(held).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        out = fh.read().decode()
    os.waitpid(child, 0)
    return out.split()


def _same_file(fd, st):
    try:
        now = os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def stray_write(data, value):
    """Write ``data`` into this worker's result pipe (a library writing to the wrong fd), then return ``value``."""
    os.write(_worker_pipes()[1], data)
    return value


def _raise(name):
    raise {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}[name]("raised while unpickling")


class RaisesWhenUnpickled:
    """Pickles fine; unpickling it (in Blender) raises the BaseException named ``name``."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return _raise, (self.name,)


def raises_when_unpickled(name):
    return RaisesWhenUnpickled(name)


def append_pid(path):
    """Append this process's id to the file ``path``; return it (a trace that the task ran)."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return os.getpid()


def pid_then_sleep(path, seconds):
    """Write this process's id to ``path``, sleep ``seconds``, return the id."""
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()
