#!/usr/bin/env python3
"""The main job: build the installable add-on, install it into a headless Blender, run the examples.

    python3 scripts/demo.py [--files N] [--save out.blend]
    BLENDER=/path/to/blender python3 scripts/demo.py

Builds ``dist/mainthread_tasks-<version>.zip``, installs it as an add-on into a throw-away user
folder of Blender (``$BLENDER``, else ``blender`` on PATH, else Debian's package installed with
apt-get), enables it, and runs each example in ``blender --background``:

- ``examples/download_demo.py``: worker threads download N files from a local HTTP server; every
  bpy call runs on the main thread (``--save``: its .blend);
- ``examples/async_download.py``: the same with asyncio on the main thread, no thread at all;
- ``examples/process_mesh.py``: vertex math in worker processes, applied to meshes on the main thread;
- ``examples/command_server.py``: a short session of the command bridge, headless with
  ``run_forever``: ``examples/command_client.py`` sends commands with the session's token from
  another process, then SIGTERM stops the server.

It prints what each example printed (without Blender's own lines) and ends with DEMO OK if every
one of them did what it should.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _setup
import build

ROOT = _setup.ROOT
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 120  # seconds for one example, Blender's start included

# Runs inside Blender before an example: install the zip like Preferences > Add-ons > Install, enable it.
INSTALL_AND_RUN = r"""
import sys, runpy, addon_utils, bpy
zip_path, demo, *demo_args = sys.argv[sys.argv.index("--") + 1:]
bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
addon_utils.enable("mainthread_tasks", default_set=True, handle_error=None)
import mainthread_tasks
assert addon_utils.check("mainthread_tasks")[1], "the add-on did not enable"
print(f"installed add-on enabled: {mainthread_tasks.__file__}", flush=True)
sys.argv = [demo, "--", *demo_args]
try:
    runpy.run_path(demo, run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
addon_utils.disable("mainthread_tasks", default_set=True)
sys.exit(code)
"""

#: The first line of an example's own output; Blender's lines before it (installing) are not shown.
FIRST_LINE = "installed add-on enabled: "


class Demo:
    """Runs the examples in one throw-away Blender user folder and shows what they print."""

    def __init__(self, blender: str, zip_path: Path, user_dir: Path):
        self.blender, self.zip_path, self.user_dir = blender, zip_path, user_dir
        self.env = dict(
            os.environ, BLENDER_USER_SCRIPTS=str(user_dir / "scripts"), BLENDER_USER_CONFIG=str(user_dir / "config")
        )
        self.env.pop("PYTHONPATH", None)

    def command(self, example: str, *args: str) -> list[str]:
        return [
            self.blender,
            "--background",
            "--factory-startup",
            "--python-exit-code",
            "1",
            "--python-expr",
            INSTALL_AND_RUN,
            "--",
            str(self.zip_path),
            str(EXAMPLES / example),
            *args,
        ]

    def start(self, example: str, *args: str) -> subprocess.Popen:
        print(f"\n===== examples/{example} {' '.join(args)}".rstrip(), flush=True)
        return subprocess.Popen(
            self.command(example, *args),
            env=self.env,
            cwd=self.user_dir,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @staticmethod
    def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> tuple[int | None, str]:
        """Wait for Blender; its exit status (None: killed after ``timeout``) and its output."""
        try:
            out = proc.communicate(timeout=timeout)[0]
        except BaseException:  # noqa: BLE001 - a timeout or Ctrl-C: Blender and its children never outlive the demo
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0]
            return None, out
        return proc.returncode, out

    @staticmethod
    def show(out: str, code: int | None, ok_line: str, inserted: str = "", after: str = "") -> bool:
        """Print the example's lines (all of Blender's output if it failed); True if it succeeded."""
        ok = code == 0 and ok_line in out
        lines = out.splitlines()
        if ok and any(line.startswith(FIRST_LINE) for line in lines):
            start = next(i for i, line in enumerate(lines) if line.startswith(FIRST_LINE))
            lines = [line for line in lines[start:] if line != "Blender quit"]
        for line in lines:
            print(line)
            if inserted and line.startswith(after):
                print(inserted.rstrip("\n"))
        if not ok:
            print(
                f"FAILED: exit status {code if code is not None else '(killed after a timeout)'}; "
                f"expected a line {ok_line!r}"
            )
        sys.stdout.flush()
        return ok

    def run(self, example: str, ok_line: str, *args: str) -> bool:
        code, out = self.finish(self.start(example, *args))
        return self.show(out, code, ok_line)

    def command_server_session(self) -> bool:
        """The bridge served by run_forever; a client in another process; then SIGTERM, as a service manager does."""
        connection_file = self.user_dir / "run" / "command_server.json"  # the server makes run/ with mode 0700
        server = self.start("command_server.py", "--connection-file", str(connection_file))
        deadline = time.monotonic() + RUN_TIMEOUT
        while not connection_file.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        client = None
        if connection_file.exists():
            # Its answers come once run_forever steps the loop, and then SIGTERM is handled.
            client = subprocess.run(
                [sys.executable, str(EXAMPLES / "command_client.py"), "--connection-file", str(connection_file)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            server.send_signal(signal.SIGTERM)
        code, out = self.finish(server, 30)
        client_out = (client.stdout + client.stderr) if client else "(no client: the server wrote no connection file)\n"
        ok = self.show(
            out,
            code,
            "command server stopped: 5 requests answered, 1 connections refused",
            inserted=client_out,
            after="its port and token are in",
        )
        if client is None or client.returncode != 0:
            print(f"FAILED: the client {'did not run' if client is None else f'exited with {client.returncode}'}")
            return False
        return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="demo.py", description="Build, install and run the examples in Blender.")
    parser.add_argument("--files", type=int, default=12, help="files for each download demo")
    parser.add_argument("--save", help="save the threaded download demo's .blend here")
    args = parser.parse_args(argv)

    zip_path = build.build_zip()
    print(f"built {zip_path.relative_to(ROOT)}", flush=True)
    blender = _setup.blender_executable()
    print(f"running the examples in {blender} --background", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mainthread_tasks-demo-") as user_dir:
        demo = Demo(blender, zip_path, Path(user_dir))
        save = ["--save", os.path.abspath(args.save)] if args.save else []
        results = {
            "download_demo.py (threads)": demo.run(
                "download_demo.py", "DOWNLOAD DEMO OK", "--files", str(args.files), *save
            ),
            "async_download.py (coroutines)": demo.run(
                "async_download.py", "ASYNC DOWNLOAD OK", "--files", str(args.files)
            ),
            "process_mesh.py (processes)": demo.run("process_mesh.py", "PROCESS MESH OK"),
            "command_server.py (a session)": demo.command_server_session(),
        }
    print(f"\n===== {len(results)} examples in {time.monotonic() - started:.1f} s")
    for name, ok in results.items():
        print(f"{'ok    ' if ok else 'FAILED'} {name}")
    passed = all(results.values())
    print("DEMO OK" if passed else "DEMO FAILED", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
