"""What every copy of the library in one process shares (no bpy).

Blender may load several copies: the installed add-on, the wheel that extensions bundle, a copy
vendored inside a legacy add-on. Each has its own module state. What they must agree on lives in
one record per purpose, a module object in ``sys.modules`` whose name says its layout (a new
layout gets a new name, so copies of different versions never misread each other's record).
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ("shared_record",)


def shared_record(name: str, doc: str, **initial: object) -> Any:
    """The record ``name``, made with the attributes ``initial`` by the first copy that asks.

    Any: a module object whose attributes are the caller's."""
    record: Any = sys.modules.get(name)
    if record is None:
        record = types.ModuleType(name, doc)
        for attribute, value in initial.items():
            setattr(record, attribute, value)
        record = sys.modules.setdefault(name, record)  # another thread may have made it meanwhile
    return record
