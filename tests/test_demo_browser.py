"""End to end in a real browser: headless Chromium drives the demo served with a tiny model.

Deselected by default; run with ``pytest -m browser tests/test_demo_browser.py``. Needs Debian's
``chromium`` (scripts/install_browser_deps.sh) and the ``playwright`` Python package; Playwright's own
browser download is not used. Set ``APDEPTH_DEMO_SCREENSHOT=path.png`` to keep the screenshot.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("APDEPTH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scene(h: int, w: int) -> np.ndarray:
    """A floor-and-wall picture with a box, so the screenshot shows something recognisable."""
    rows, cols = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = np.empty((h, w, 3))
    img[...] = np.stack([0.55 + 0.3 * rows, 0.65 + 0.2 * rows, 0.85 - 0.1 * cols], axis=-1)  # wall
    floor = rows > 0.6
    img[floor] = np.stack([0.45 + 0.4 * rows, 0.35 + 0.3 * rows, 0.25 + 0.1 * cols], axis=-1)[floor]
    box = (rows > 0.35) & (rows < 0.8) & (cols > 0.3) & (cols < 0.55)
    img[box] = [0.8, 0.3, 0.2]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory, tiny_pipeline):
    pytest.importorskip("gradio")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found; run scripts/install_browser_deps.sh")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from apdepth.demo import build_demo, launch

    work = tmp_path_factory.mktemp("demo-work")
    demo = build_demo(tiny_pipeline, work_dir=work, examples_dir=None)
    port = _free_port()
    launch(demo, "127.0.0.1", port, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture()
def page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 1000}, accept_downloads=True)
        pg = context.new_page()
        pg.set_default_timeout(120_000)  # generous: a busy 2-core CPU renders WebGL in software
        yield pg
        context.close()
        browser.close()


def test_upload_predict_and_download(demo_url, page, tmp_path):
    Image.fromarray(_scene(192, 256)).save(tmp_path / "room.png")
    page.goto(demo_url, wait_until="load")
    page.locator("#apdepth-input input[type=file]").set_input_files(str(tmp_path / "room.png"))
    page.get_by_text("room.png").first.wait_for()
    page.locator("#apdepth-run").click()

    downloads = page.locator("#apdepth-downloads a")
    page.wait_for_function("document.querySelectorAll('#apdepth-downloads a').length >= 4")
    names = downloads.evaluate_all("links => links.map(a => a.getAttribute('download') || a.href)")
    for expected in ("room_depth.png", "room_depth.npy", "room_depth_colored.png", "room.ply"):
        assert any(expected in n for n in names), names

    # both halves of the comparison slider and the prior's depth are decoded images
    page.wait_for_function(
        "document.querySelectorAll('#apdepth-slider img').length >= 2 && "
        "[...document.querySelectorAll('#apdepth-slider img, #apdepth-prior img')].every(i => i.naturalWidth > 0)"
    )
    assert page.locator("#apdepth-prior img").count() == 1
    assert page.locator("#apdepth-3d canvas").count() >= 1
    assert "1 image" in page.locator("#apdepth-status").inner_text()

    with page.expect_download() as info:
        page.locator("#apdepth-downloads a[download$='room_depth.npy']").first.click()
    depth = np.load(io.BytesIO(Path(info.value.path()).read_bytes()))
    assert depth.shape == (192, 256) and depth.dtype == np.float32
    assert 0.0 <= depth.min() <= depth.max() <= 1.0

    page.wait_for_timeout(2000)  # let the 3D viewer draw before the picture is taken
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("APDEPTH_DEMO_SCREENSHOT"):
        Path(os.environ["APDEPTH_DEMO_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["APDEPTH_DEMO_SCREENSHOT"])


def test_corrupt_upload_shows_a_message_not_a_trace(demo_url, page, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is not a picture")
    page.goto(demo_url, wait_until="load")
    page.locator("#apdepth-input input[type=file]").set_input_files(str(bad))
    page.get_by_text("holiday.jpg").first.wait_for()
    page.locator("#apdepth-run").click()
    page.get_by_text("holiday.jpg: not a recognised image format").first.wait_for()
    assert "Traceback" not in page.content()
    assert page.locator("#apdepth-downloads a").count() == 0


def test_video_tab_upload_and_depth_video(demo_url, page, tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from apdepth.video import VideoWriter, read_video

    # A short clip: the picture pans 4 px per frame, 8 frames at 8 fps (1 s).
    wide = _scene(96, 160)
    clip = tmp_path / "pan.mp4"
    with VideoWriter(clip, 8.0) as vw:
        for t in range(8):
            vw.write(np.ascontiguousarray(wide[:, 4 * t : 4 * t + 128]))
    page.goto(demo_url, wait_until="load")
    page.get_by_role("tab", name="Video").click()
    page.locator("#apdepth-video-input input[type=file]").set_input_files(str(clip))
    page.get_by_text("pan.mp4").first.wait_for()
    page.locator("#apdepth-video-run").click()

    page.wait_for_function("document.querySelectorAll('#apdepth-video-downloads a').length >= 2")
    status = page.locator("#apdepth-video-status").inner_text()
    assert "8 frames" in status and "128×96" in status and "temporally consistent" in status, status
    # The side-by-side video plays in the page (input | depth, twice the clip's width).
    page.wait_for_function(
        "(() => { const v = document.querySelector('#apdepth-video-output video');"
        " return v && v.readyState >= 1 && v.videoWidth > 0; })()"
    )
    size = page.evaluate(
        "(() => { const v = document.querySelector('#apdepth-video-output video');"
        " return [v.videoWidth, v.videoHeight]; })()"
    )
    assert size == [256, 96], size

    with page.expect_download() as info:
        page.locator("#apdepth-video-downloads a[download$='pan_depth.mp4']").first.click()
    depth_video, _, meta = read_video(Path(info.value.path()))
    assert depth_video.shape == (8, 96, 128, 3) and meta.fps == pytest.approx(8.0)
    with page.expect_download() as info:
        page.locator("#apdepth-video-downloads a[download$='pan_depth.npz']").first.click()
    stack = np.load(io.BytesIO(Path(info.value.path()).read_bytes()))["depth"]
    assert stack.shape == (8, 96, 128) and stack.dtype == np.float32
    assert 0.0 <= stack.min() <= stack.max() <= 1.0
    assert "Traceback" not in page.content()
