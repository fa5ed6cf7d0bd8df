"""What the process pool needs from Windows that the standard library lacks (ctypes, kernel32).

- ``add_to_job``: a Job Object with "kill on job close". Every worker process joins it; the job's
  only handle is Blender's, so when Blender ends -- quits, crashes or is killed from the task manager
  -- Windows closes that handle and ends the workers with it, and whatever their tasks started
  (child processes join their parent's job). This is Windows' answer to PR_SET_PDEATHSIG
  (``_process_child._end_with_parent``), and it also covers the workers' own children.
- ``has_console()``: whether Blender has a console window to share with its workers. Without one
  (Blender started from its icon), each worker (a console program, python.exe) would open a console
  window of its own, so the pool starts them with CREATE_NO_WINDOW.

Imported on Windows only (``_process``).
"""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
from ctypes import wintypes

__all__ = ("add_to_job", "has_console")

assert sys.platform == "win32", "Windows only"

logger = logging.getLogger("mainthread_tasks")

_JobObjectExtendedLimitInformation = 9  # JOBOBJECTINFOCLASS
_JOB_OBJECT_LIMIT_BREAKAWAY_OK = 0x0800
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
_PROCESS_TERMINATE = 0x0001
_PROCESS_SET_QUOTA = 0x0100


class _IoCounters(ctypes.Structure):
    _fields_ = [
        ("ReadOperationCount", ctypes.c_ulonglong),
        ("WriteOperationCount", ctypes.c_ulonglong),
        ("OtherOperationCount", ctypes.c_ulonglong),
        ("ReadTransferCount", ctypes.c_ulonglong),
        ("WriteTransferCount", ctypes.c_ulonglong),
        ("OtherTransferCount", ctypes.c_ulonglong),
    ]


class _BasicLimitInformation(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", wintypes.DWORD),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", wintypes.DWORD),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", wintypes.DWORD),
        ("SchedulingClass", wintypes.DWORD),
    ]


class _ExtendedLimitInformation(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", _BasicLimitInformation),
        ("IoInfo", _IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


_kernel32_dll: ctypes.WinDLL | None = None


def _kernel32() -> ctypes.WinDLL:
    global _kernel32_dll
    if _kernel32_dll is not None:
        return _kernel32_dll
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateJobObjectW.argtypes = (ctypes.c_void_p, wintypes.LPCWSTR)
    kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    kernel32.SetInformationJobObject.argtypes = (wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD)
    kernel32.SetInformationJobObject.restype = wintypes.BOOL
    kernel32.AssignProcessToJobObject.argtypes = (wintypes.HANDLE, wintypes.HANDLE)
    kernel32.AssignProcessToJobObject.restype = wintypes.BOOL
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    kernel32.CloseHandle.restype = wintypes.BOOL
    kernel32.GetConsoleWindow.argtypes = ()
    kernel32.GetConsoleWindow.restype = wintypes.HWND
    _kernel32_dll = kernel32
    return kernel32


_job: int | None = None  # the handle of the workers' Job Object, made on first use; never closed
_job_failed = False  # said once why workers run outside the job


def add_to_job(proc: subprocess.Popen[bytes]) -> None:
    """Put worker ``proc`` into the workers' Job Object. Main thread (the pool's).

    Called before the worker gets a task, so before it can start anything. One job for the life of
    Blender's process, never closed by us: Windows closes it when Blender ends, and ends what is in
    it. (Closing it when the pool stops would also end what tasks started on purpose.) A task can
    start a process that must outlive Blender with ``creationflags=subprocess.CREATE_BREAKAWAY_FROM_JOB``.

    If Windows refuses (Blender runs in a job that forbids this), the worker runs outside a job:
    it then ends at end-of-file when Blender ends, after its task. Logged once.
    """
    global _job, _job_failed
    try:
        kernel32 = _kernel32()
        if _job is None:
            _job = _create_job(kernel32)
        # A handle of our own (Popen's is private). The pid names this very process: Popen holds
        # a handle to it, so it cannot be reused before Popen waits for it.
        process = kernel32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, proc.pid)
        if not process:
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            if not kernel32.AssignProcessToJobObject(_job, process):
                raise ctypes.WinError(ctypes.get_last_error())
        finally:
            kernel32.CloseHandle(process)
    except OSError as exc:
        if not _job_failed:
            _job_failed = True
            logger.warning(
                "mainthread_tasks: worker processes run outside a Job Object (%s): a worker busy when Blender "
                "ends finishes its task first",
                exc,
            )


def _create_job(kernel32: ctypes.WinDLL) -> int:
    handle = kernel32.CreateJobObjectW(None, None)  # no security attributes: never inherited
    if not handle:
        raise ctypes.WinError(ctypes.get_last_error())
    info = _ExtendedLimitInformation()
    info.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | _JOB_OBJECT_LIMIT_BREAKAWAY_OK
    if not kernel32.SetInformationJobObject(
        handle, _JobObjectExtendedLimitInformation, ctypes.byref(info), ctypes.sizeof(info)
    ):
        error = ctypes.WinError(ctypes.get_last_error())
        kernel32.CloseHandle(handle)
        raise error
    return int(handle)


def has_console() -> bool:
    """Whether this process has a console window (Blender started from a terminal, or with its
    console shown)."""
    return bool(_kernel32().GetConsoleWindow())
