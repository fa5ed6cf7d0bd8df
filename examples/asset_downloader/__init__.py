"""Asset Downloader: a small, complete add-on built on mainthread_tasks (see docs/addons.md).

*View3D > Add > Download Demo Assets* starts a worker thread that downloads a list of JSON "assets"
with a progress item in the status bar (cancel button, or ESC over Blender), and creates a cube for
each one with ``bpy.ops`` inside ``ui_context`` on the main thread, then frames them all in the 3D
view. Without a URL it serves demo assets itself from a local HTTP server (127.0.0.1 only).

Install Main Thread Tasks first (the add-on or extension), then this folder as a legacy add-on
(zip it: ``asset_downloader/__init__.py``).
"""

from __future__ import annotations

import importlib
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bpy

bl_info = {
    "name": "Asset Downloader (mainthread_tasks example)",
    "author": "mainthread_tasks developers",
    "version": (0, 1, 0),
    "blender": (3, 2, 0),  # ui_context needs bpy.context.temp_override
    "location": "View3D > Add > Download Demo Assets",
    "description": "Downloads assets in a worker thread with progress and cancel, then adds them with bpy.ops",
    "category": "Import-Export",
}

mt = None  # the mainthread_tasks module, found at register()


def find_mainthread_tasks():
    """The installed Main Thread Tasks: the legacy add-on, or the extension in any repository."""
    names = ["mainthread_tasks"]
    extensions = getattr(bpy.context.preferences, "extensions", None)  # Blender >= 4.2
    if extensions is not None:
        names += [f"bl_ext.{repo.module}.mainthread_tasks" for repo in extensions.repos]
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("Asset Downloader needs the Main Thread Tasks add-on: install and enable it first")


# -- the worker thread: I/O only, never bpy ----------------------------------------------------------


def download_all(urls: list[str]) -> None:
    try:
        with mt.progress("Downloading assets", total=len(urls)) as progress:
            for url in urls:
                if progress.cancelled:  # the status bar's cancel button, or ESC
                    return
                with urllib.request.urlopen(url, timeout=30) as response:
                    spec = json.load(response)
                # The bpy part goes to the main thread. Attached, it is dropped if the user
                # cancels before it has run.
                progress.attach(mt.run_on_main(add_asset, spec))
                progress.advance()
            mt.run_on_main(frame_assets)
    except Exception as exc:  # noqa: BLE001 - shown to the user instead of dying in the console
        # A message box only touches the interface: ui_only lets it show even during a render.
        mt.post_on_main(mt.ui_only(show_error), f"Download failed: {exc}")


# -- the main thread: bpy -----------------------------------------------------------------------------


def add_asset(spec: dict) -> str:
    # Operators that need a 3D view (align to the view, frame the result) fail their poll() in a
    # timer, where there is a window but no area: ui_context gives them the largest 3D view.
    with mt.ui_context("VIEW_3D"):
        bpy.ops.mesh.primitive_cube_add(size=spec["size"], location=spec["location"], align="WORLD")
        obj = bpy.context.active_object
        obj.name = spec["name"]
        obj["asset_url"] = spec["url"]
        return obj.name


def frame_assets() -> None:
    with mt.ui_context("VIEW_3D"):
        bpy.ops.view3d.view_all()


def show_error(message: str) -> None:
    print(f"Asset Downloader: {message}")
    if bpy.context.window_manager.windows:
        bpy.context.window_manager.popup_menu(
            lambda menu, _context: menu.layout.label(text=message), title="Asset Downloader", icon="ERROR"
        )


# -- the operator -------------------------------------------------------------------------------------


class ASSETDL_OT_download(bpy.types.Operator):
    """Download assets in the background and add them to the scene"""

    bl_idname = "asset_downloader.download"
    bl_label = "Download Demo Assets"
    bl_options = {"REGISTER"}

    url: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="URL", description="Folder URL serving 0.json, 1.json, ...; empty: local demo assets"
    )
    count: bpy.props.IntProperty(name="Assets", default=12, min=1, max=500)  # type: ignore[valid-type]

    def execute(self, context):
        base = self.url.rstrip("/") or demo_server().base_url
        urls = [f"{base}/{i}.json" for i in range(self.count)]
        threading.Thread(target=download_all, args=(urls,), name="asset-downloader", daemon=True).start()
        self.report({"INFO"}, f"Downloading {len(urls)} assets (Esc cancels)")
        return {"FINISHED"}


def menu_entry(self, _context):
    self.layout.operator(ASSETDL_OT_download.bl_idname, icon="IMPORT")


# -- demo assets, served on 127.0.0.1 ------------------------------------------------------------------


class DemoAssets(BaseHTTPRequestHandler):
    delay = 0.15  # seconds per file: slow enough to watch the progress

    def do_GET(self):
        try:
            index = int(self.path.rsplit("/", 1)[-1].removesuffix(".json"))
        except ValueError:
            self.send_error(404)
            return
        time.sleep(self.delay)
        body = json.dumps(
            {
                "name": f"asset_{index:03d}",
                "size": 0.6 + 0.05 * (index % 5),
                "location": [(index % 6) * 1.5, (index // 6) * 1.5, 0.0],
                "url": f"{self.server.base_url}/{index}.json",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


_server = None


def demo_server() -> ThreadingHTTPServer:
    global _server
    if _server is None:
        _server = ThreadingHTTPServer(("127.0.0.1", 0), DemoAssets)
        _server.base_url = f"http://127.0.0.1:{_server.server_address[1]}/assets"
        threading.Thread(target=_server.serve_forever, name="asset-demo-server", daemon=True).start()
    return _server


# -- add-on hooks -------------------------------------------------------------------------------------


def register():
    global mt
    mt = find_mainthread_tasks()
    mt.register()  # reference-counted: safe next to the Main Thread Tasks add-on's own
    bpy.utils.register_class(ASSETDL_OT_download)
    bpy.types.VIEW3D_MT_add.append(menu_entry)


def stop_demo_server() -> None:
    """Stop the local demo server if it runs (unregister() does; so do the tests, after each)."""
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None


def unregister():
    bpy.types.VIEW3D_MT_add.remove(menu_entry)
    bpy.utils.unregister_class(ASSETDL_OT_download)
    stop_demo_server()
    mt.unregister()
