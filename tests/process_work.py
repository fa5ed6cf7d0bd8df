"""Functions the run_in_process tests send to worker processes (a module the workers can import)."""

from __future__ import annotations

import os
import signal
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
    os.kill(os.getpid(), signal.SIGSEGV)


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


# -- what a task may do to its worker's pipes (the worker runs ``_process_child.py TASK_FD RESULT_FD``) --


def _worker_pipes():
    return int(sys.argv[1]), int(sys.argv[2])


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
