"""Which thread is Blender's main thread (no bpy)."""

from __future__ import annotations

import threading

__all__ = ("is_main_thread", "MAIN_THREAD_IDENT")

# Blender runs Python on its main thread, so Python's main thread is Blender's.
MAIN_THREAD_IDENT = threading.main_thread().ident
_get_ident = threading.get_ident


def is_main_thread() -> bool:
    """True when called on the main thread, the only thread where ``bpy`` may be used. Any thread."""
    return _get_ident() == MAIN_THREAD_IDENT
