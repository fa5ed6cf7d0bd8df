"""The Asset Downloader's tests, run inside Blender by the test kit.

From the top of a checkout, with this add-on installed into a temporary user
folder (docs/testing.md):

    python3 -m mainthread_tasks.testing --addon examples/asset_downloader \
        examples/asset_downloader/tests

The download is a coroutine on Blender's main thread: pump_until steps it, as
the add-on's timer does in Blender's interface, until it has ended. The kit
fails a test that leaves a coroutine, a thread, queued work or a timer behind.
"""

import threading

import bpy
import pytest

import asset_downloader

ASSETS = 4


@pytest.fixture(autouse=True)
def demo_server():
    """The first download starts the demo server; it goes with the test."""
    yield
    asset_downloader.demo_assets.stop()


def download(pump_until, **options) -> set[str]:
    """Run the operator, step the download until it ends; the threads seen."""
    assert bpy.ops.asset_downloader.download(count=ASSETS, **options) == {
        "FINISHED"
    }
    assert asset_downloader.downloads, (
        "the operator returns while the download runs"
    )
    seen = set()

    def ended():
        seen.update(thread.name for thread in threading.enumerate())
        return not asset_downloader.downloads

    pump_until(ended, timeout=30)
    return seen


def test_download_adds_one_cube_per_asset_without_a_thread(pump_until):
    before = {thread.name for thread in threading.enumerate()}
    # Headless, the library prints the progress from a thread of its own.
    assert download(pump_until) - before <= {"mainthread_tasks-progress"}
    for i in range(ASSETS):
        obj = bpy.data.objects[f"asset_{i:03d}"]
        assert obj.type == "MESH" and obj["asset_url"].endswith(f"/{i}.json")
        assert tuple(obj.location) == pytest.approx(
            ((i % 6) * 1.5, (i // 6) * 1.5, 0.0)
        )


def test_a_failed_download_is_reported(pump_until, capsys):
    download(pump_until, url="http://127.0.0.1:1")  # nothing listens on port 1
    assert (
        "Asset Downloader: Download failed: ConnectionRefusedError"
        in capsys.readouterr().out
    )
    assert "asset_000" not in bpy.data.objects


def test_disabling_the_addon_cancels_its_download(pump_until, capsys):
    assert bpy.ops.asset_downloader.download(count=ASSETS) == {"FINISHED"}
    pump_until(lambda: "asset_000" in bpy.data.objects, timeout=30)
    (future,) = asset_downloader.downloads
    mt = asset_downloader.mt
    mt.register()  # as another add-on would: the library keeps running
    try:
        asset_downloader.unregister()
        assert future.cancelled() and not asset_downloader.downloads
        # The coroutine ends at the loop's next step, and its progress says how.
        printed = []
        pump_until(
            lambda: (
                printed.append(capsys.readouterr().err)
                or "failed (CancelledError)" in "".join(printed)
            )
        )
        assert "asset_003" not in bpy.data.objects
    finally:
        asset_downloader.register()
        mt.unregister()


@pytest.mark.gui
def test_in_the_ui_the_3d_view_is_framed_on_the_assets(pump_until):
    areas = bpy.context.window.screen.areas
    view = next(
        area for area in areas if area.type == "VIEW_3D"
    ).spaces.active.region_3d
    before = tuple(view.view_location)
    download(pump_until)
    # view_all, in the 3D view by ui_context, framed the cube and the assets.
    assert tuple(view.view_location) != pytest.approx(before)
    assert view.view_location.x > 0.5
