"""Asset Downloader: the add-on that docs/tutorial.md builds, step by step.

View3D > Add > Download Demo Assets downloads JSON "assets" with a coroutine
on Blender's main thread (no thread), shows its progress in the status bar
(its cancel button or ESC stops it), adds a cube for each asset with bpy.ops
in the 3D view and frames them. Without a URL it downloads demo assets from
demo_assets.py, a server that the same main thread runs.
"""

import asyncio
import importlib
import json
import urllib.parse

import bpy

from . import demo_assets

bl_info = {
    "name": "Asset Downloader (mainthread_tasks example)",
    "author": "mainthread_tasks developers",
    "version": (0, 2, 0),
    "blender": (3, 4, 0),
    "location": "View3D > Add > Download Demo Assets",
    "description": "Downloads assets without a thread, with progress",
    "category": "Import-Export",
}


mt = None  # the mainthread_tasks module, found by register()


def find_mainthread_tasks():
    """The installed Main Thread Tasks: the legacy add-on, or the extension."""
    names = ["mainthread_tasks"]
    extensions = getattr(
        bpy.context.preferences, "extensions", None
    )  # Blender 4.2 and later
    if extensions is not None:
        names += [
            f"bl_ext.{repo.module}.mainthread_tasks"
            for repo in extensions.repos
        ]
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "Asset Downloader needs the Main Thread Tasks add-on: install it first"
    )


def register():
    global mt
    mt = find_mainthread_tasks()
    mt.register()  # counted: other add-ons may use the library too
    bpy.utils.register_class(ASSETDL_OT_download)
    bpy.types.VIEW3D_MT_add.append(menu_entry)


def unregister():
    bpy.types.VIEW3D_MT_add.remove(menu_entry)
    bpy.utils.unregister_class(ASSETDL_OT_download)
    for future in list(downloads):
        future.cancel()  # stops at the current await; the with blocks end
    demo_assets.stop()
    mt.unregister()


async def fetch_json(url):
    """GET url and decode its JSON. While it waits, Blender runs on."""
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    reader, writer = await asyncio.open_connection(
        parts.hostname,
        parts.port or (443 if https else 80),
        ssl=True if https else None,
    )
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = f"GET {path or '/'} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n"
        writer.write(request.encode())
        response = (
            await reader.read()
        )  # HTTP/1.0: the server closes the connection at the end
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if status.split(" ")[1:2] != ["200"]:
        raise OSError(f"{url}: {status or 'no answer'}")
    return json.loads(body)


async def download_all(url, count):
    base = (
        url.rstrip("/") or await demo_assets.serve()
    )  # no URL: the demo assets
    with mt.progress("Downloading assets", total=count) as progress:
        for i in range(count):
            if (
                progress.cancelled
            ):  # the cancel button in the status bar, or ESC
                return
            spec = await asyncio.wait_for(
                fetch_json(f"{base}/{i}.json"), timeout=30
            )
            add_asset(
                spec
            )  # between two awaits: on the main thread, bpy is safe
            progress.advance()
    frame_assets()


def add_asset(spec):
    # Operators that need a 3D view fail their poll() where there is no area
    # (a timer, and so a coroutine step): ui_context runs them in the largest
    # 3D view.
    with mt.ui_context("VIEW_3D"):
        bpy.ops.mesh.primitive_cube_add(
            size=spec["size"], location=spec["location"], align="WORLD"
        )
        obj = bpy.context.active_object
        obj.name = spec["name"]
        obj["asset_url"] = spec["url"]


class ASSETDL_OT_download(bpy.types.Operator):
    """Download assets without a thread and add them to the scene"""

    bl_idname = "asset_downloader.download"
    bl_label = "Download Demo Assets"
    bl_options = {"REGISTER"}

    url: bpy.props.StringProperty(
        name="URL", description="Serves 0.json, 1.json...; empty: demo assets"
    )
    count: bpy.props.IntProperty(name="Assets", default=12, min=1, max=500)

    def execute(self, context):
        future = mt.run_async(
            download_all(self.url, self.count)
        )  # returns at once
        downloads.add(future)
        future.add_done_callback(download_ended)
        self.report({"INFO"}, f"Downloading {self.count} assets (Esc cancels)")
        return {"FINISHED"}


def menu_entry(self, _context):
    self.layout.operator(ASSETDL_OT_download.bl_idname, icon="IMPORT")


def frame_assets():
    with mt.ui_context("VIEW_3D"):
        bpy.ops.view3d.view_all()


downloads = set()  # the Futures of the downloads under way


def download_ended(future):  # a done-callback: on the main thread
    downloads.discard(future)
    if not future.cancelled() and future.exception() is not None:
        show_error(f"Download failed: {future.exception()!r}")


def show_error(message):
    print(f"Asset Downloader: {message}")
    if not bpy.app.background:  # a message box in the interface
        bpy.context.window_manager.popup_menu(
            lambda menu, _context: menu.layout.label(text=message),
            title="Asset Downloader",
            icon="ERROR",
        )
