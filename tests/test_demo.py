"""The web demo's processing core and its error handling, without a browser."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from apdepth.demo import build_demo, load_upload, process_images
from apdepth.image_io import read_depth_png16
from apdepth.pointcloud import read_ply
from conftest import random_rgb

gr = pytest.importorskip("gradio")


@pytest.fixture()
def uploads(tmp_path):
    up = tmp_path / "up"
    (up / "a").mkdir(parents=True)
    (up / "b").mkdir()
    Image.fromarray(random_rgb(30, 40, 1)).save(up / "a" / "photo.png")
    Image.fromarray(random_rgb(24, 20, 2)).save(up / "b" / "photo.png")  # same name, different folder
    (up / "broken.jpg").write_text("not an image at all")
    (up / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG header and nothing else")
    return up


def test_process_images_writes_every_output(tiny_pipeline, uploads, tmp_path):
    calls = []
    results = process_images(
        tiny_pipeline, [uploads / "a" / "photo.png", uploads / "b" / "photo.png"], tmp_path / "out",
        processing_resolution=32, color_map="magma", progress=lambda frac, desc="": calls.append((frac, desc)),
    )
    assert [r.name for r in results] == ["photo.png", "photo.png"]
    assert [r.shape for r in results] == [(30, 40), (24, 20)]
    names = [[p.name for p in r.downloads] for r in results]
    assert names == [["photo_depth.png", "photo_depth.npy", "photo_depth_colored.png", "photo.ply"],
                     ["photo_2_depth.png", "photo_2_depth.npy", "photo_2_depth_colored.png", "photo_2.ply"]]
    for r in results:
        png16, npy, colored, ply = r.downloads
        depth = np.load(npy)
        assert depth.shape == r.shape and depth.dtype == np.float32 and 0 <= depth.min() <= depth.max() <= 1
        np.testing.assert_allclose(read_depth_png16(png16), depth, atol=1 / 65535)
        with Image.open(colored) as im:
            assert im.size == r.shape[::-1] and im.mode == "RGB"
        points, colors = read_ply(ply)
        assert len(points) == r.n_points and 0 < r.n_points <= r.shape[0] * r.shape[1]
        assert 1.0 <= points[:, 2].min() and points[:, 2].max() <= 10.0  # default far/near ratio 10
        assert r.prior_colored_path is not None and r.prior_colored_path.is_file()
        assert r.glb_path.read_bytes()[:4] == b"glTF"
    assert calls[0][0] == 0 and "photo.png (1/2)" in calls[0][1] and calls[-1][0] == 1.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda up: [up / "broken.jpg"], "broken.jpg: not a recognised image format"),
        (lambda up: [up / "a" / "photo.png", up / "cut.jpg"], r"cut.jpg: cannot read the image"),
        (lambda up: [], "Upload at least one image"),
        (lambda up: [up / "a" / "photo.png"] * 3, "at most 2"),
    ],
)
def test_bad_uploads_fail_before_inference(tiny_pipeline, uploads, tmp_path, make, message):
    class Counting:
        prior, config, n = tiny_pipeline.prior, tiny_pipeline.config, 0

        def __call__(self, *a, **k):
            self.n += 1
            return tiny_pipeline(*a, **k)

    pipe = Counting()
    with pytest.raises(ValueError, match=message):
        process_images(pipe, make(uploads), tmp_path / "o", max_images=2)
    assert pipe.n == 0


def test_oversized_image_is_refused_from_its_header(uploads):
    with pytest.raises(ValueError, match=r"photo.png: 40x30 is 0.0 megapixels; the demo accepts at most 0.001"):
        load_upload(uploads / "a" / "photo.png", max_megapixels=0.001)
    truncated = uploads / "t.png"
    good = (uploads / "a" / "photo.png").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"^t.png: "):  # the user sees the upload name, not a server path
        load_upload(truncated)


def test_click_handler_turns_errors_into_gradio_messages(tiny_pipeline, uploads, tmp_path):
    demo = build_demo(tiny_pipeline, work_dir=tmp_path / "work", examples_dir=None)
    handler = next(f.fn for f in demo.fns.values() if f.name == "on_run")
    noop = lambda *a, **k: None  # noqa: E731
    with pytest.raises(gr.Error, match="broken.jpg: not a recognised image format"):
        handler([str(uploads / "broken.jpg")], 32, "Spectral", 60, 10, progress=noop)
    slider, prior, glb, downloads, state, pick, status = handler(
        [str(uploads / "a" / "photo.png")], 32, "Spectral", 60, 10, progress=noop)
    assert slider[0].endswith("photo_input.png") and slider[1].endswith("photo_depth_colored.png")
    assert glb.endswith(".glb") and len(downloads) == 4 and state[0]["name"] == "photo.png"
    assert "1 image" in status
    # a failed request leaves no output folder behind; the good one left exactly one
    assert len(list((tmp_path / "work").iterdir())) == 1
