"""Pure-Python vertex math for ``examples/process_mesh.py``; it runs in worker processes.

No ``bpy`` here, and nothing Blender-specific: ``run_in_process`` imports this module in a plain
Python worker process. Coordinates travel as flat ``array('f')`` (x0, y0, z0, x1, ...), what
``mesh.vertices.foreach_get("co", ...)`` fills and ``foreach_set`` takes: compact to pickle.
"""

from __future__ import annotations

import math
from array import array


def ripple(coords: array, sources: list[tuple[float, float, float]], amplitude: float, wavelength: float) -> array:
    """Return ``coords`` with every vertex's z set to the interference of circular waves.

    Each source is ``(x, y, phase)``; a wave fades with the distance from its source. Pure Python
    on purpose: CPU-heavy work that a thread could not run alongside Blender (the GIL).
    """
    out = array("f", coords)
    k = 2.0 * math.pi / wavelength
    hypot, sin = math.hypot, math.sin
    for i in range(0, len(out), 3):
        x, y = out[i], out[i + 1]
        z = 0.0
        for sx, sy, phase in sources:
            d = hypot(x - sx, y - sy)
            z += sin(k * d + phase) / (1.0 + d)
        out[i + 2] = amplitude * z
    return out
