"""A display for the gui tests: $DISPLAY, or an Xvfb the launcher starts and stops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from ._kit import XVFB_SCREEN

# -- a display for the gui tests ------------------------------------------------------------------------


class Display:
    """Where the UI sessions run: the desktop's display, or an Xvfb the launcher starts on first use."""

    def __init__(self, force_xvfb: bool) -> None:
        self.force_xvfb = force_xvfb
        self.xvfb: subprocess.Popen[bytes] | None = None
        self.name: str | None = None
        self.why_not: str | None = None

    def environment(self) -> dict[str, str] | None:
        """The environment entries for a UI session, or None (then ``why_not`` says why)."""
        if not self.force_xvfb:
            if os.name == "nt" or sys.platform == "darwin":
                return {}
            if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
                return {}
        if self.name is None and self.why_not is None:
            self._start_xvfb()
        return None if self.name is None else {"DISPLAY": self.name}

    def _start_xvfb(self) -> None:
        xvfb = shutil.which("Xvfb")
        if xvfb is None:
            self.why_not = (
                "no display to run Blender's UI on: $DISPLAY is not set and Xvfb is not installed "
                "(Debian/Ubuntu: apt-get install xvfb)"
            )
            return
        read_end, write_end = os.pipe()
        self.xvfb = subprocess.Popen(
            [xvfb, "-displayfd", str(write_end), "-screen", "0", XVFB_SCREEN, "-nolisten", "tcp"],
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(write_end)
        number = b""
        with os.fdopen(read_end, "rb") as reader:
            number = reader.readline().strip()  # Xvfb writes its display number once it is ready
        if not number:
            self.close()
            self.why_not = "Xvfb did not start (run `Xvfb -displayfd 1` to see why)"
            return
        self.name = f":{number.decode()}"

    def close(self) -> None:
        if self.xvfb is not None:
            self.xvfb.terminate()
            try:
                self.xvfb.wait(10)
            except subprocess.TimeoutExpired:
                self.xvfb.kill()
            self.xvfb = None
