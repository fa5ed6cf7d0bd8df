"""The Asset Downloader's own tests, inside Blender, run by the test kit (docs/testing.md). From this
add-on's folder, with Main Thread Tasks and this add-on installed into a temporary user folder::

    python3 -m mainthread_tasks.testing --addon ../../mainthread_tasks --addon . tests

The download runs in a worker thread and hands its bpy work to the main thread: ``pump_until`` runs
that work (and the add-on's timer) until the assets are in the scene. The kit fails a test that
leaves the worker, queued work or the demo server's thread behind.
"""

import threading

import bpy
import pytest

import asset_downloader

ASSETS = 4


@pytest.fixture(autouse=True)
def demo_server():
    """The operator starts a local demo server on first use; it goes with the test."""
    yield
    asset_downloader.stop_demo_server()


def downloading() -> bool:
    return any(thread.name == "asset-downloader" for thread in threading.enumerate())


def download(pump_until) -> list[str]:
    assert bpy.ops.asset_downloader.download(count=ASSETS) == {"FINISHED"}
    names = [f"asset_{i:03d}" for i in range(ASSETS)]
    # Until the worker has ended and the main thread has run all it handed over (framing the view).
    pump_until(lambda: not downloading() and not asset_downloader.mt.stats().pending, timeout=30)
    return names


def test_download_adds_one_cube_per_asset(pump_until):
    names = download(pump_until)
    for i, name in enumerate(names):
        obj = bpy.data.objects[name]
        assert obj.type == "MESH" and obj["asset_url"].endswith(f"/{i}.json")
        assert tuple(obj.location) == pytest.approx(((i % 6) * 1.5, (i // 6) * 1.5, 0.0))


@pytest.mark.gui
def test_in_the_ui_the_3d_view_is_framed_on_the_assets(pump_until):
    view = next(area for area in bpy.context.window.screen.areas if area.type == "VIEW_3D").spaces.active.region_3d
    before = tuple(view.view_location)
    download(pump_until)
    # view_all, run in the 3D view by ui_context, framed the default cube and the row of assets.
    assert tuple(view.view_location) != pytest.approx(before)
    assert view.view_location.x > 0.5
