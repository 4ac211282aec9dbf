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
        tiny_pipeline,
        [uploads / "a" / "photo.png", uploads / "b" / "photo.png"],
        tmp_path / "out",
        processing_resolution=32,
        color_map="magma",
        progress=lambda frac, desc="": calls.append((frac, desc)),
    )
    assert [r.name for r in results] == ["photo.png", "photo.png"]
    assert [r.shape for r in results] == [(30, 40), (24, 20)]
    names = [[p.name for p in r.downloads] for r in results]
    assert names == [
        ["photo_depth.png", "photo_depth.npy", "photo_depth_colored.png", "photo.ply"],
        ["photo_2_depth.png", "photo_2_depth.npy", "photo_2_depth_colored.png", "photo_2.ply"],
    ]
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
        (
            lambda up: [up / "broken.jpg", up / "cut.jpg"],
            r"^broken.jpg: not a recognised image format; cut.jpg: cannot read the image",
        ),
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
        [str(uploads / "a" / "photo.png")], 32, "Spectral", 60, 10, progress=noop
    )
    assert slider[0].endswith("photo_input.png") and slider[1].endswith("photo_depth_colored.png")
    assert glb.endswith(".glb") and len(downloads) == 4 and state[0]["name"] == "photo.png"
    assert "1 image" in status
    # a failed request leaves no output folder behind; the good one left exactly one
    assert len(list((tmp_path / "work").iterdir())) == 1


def test_one_bad_file_does_not_block_the_good_ones(tiny_pipeline, uploads, tmp_path):
    results = process_images(
        tiny_pipeline,
        [uploads / "a" / "photo.png", uploads / "cut.jpg", uploads / "b" / "photo.png"],
        tmp_path / "o",
        processing_resolution=32,
    )
    assert [r.shape for r in results] == [(30, 40), (24, 20)]
    assert list(results.failed) == ["cut.jpg"] and results.failed["cut.jpg"].startswith("cannot read the image")

    class FailsOnSmall:
        prior, config = tiny_pipeline.prior, tiny_pipeline.config

        def __call__(self, image, **k):
            if image.shape[0] < 30:
                raise RuntimeError("out of memory")
            return tiny_pipeline(image, **k)

    results = process_images(FailsOnSmall(), [uploads / "a" / "photo.png", uploads / "b" / "photo.png"], tmp_path / "p")
    assert len(results) == 1 and results.failed == {"photo.png": "depth estimation failed (out of memory)"}


def test_errors_stay_on_screen_and_partial_failures_are_listed(tiny_pipeline, uploads, tmp_path, monkeypatch):
    demo = build_demo(tiny_pipeline, work_dir=tmp_path / "work", examples_dir=None)
    handler = next(f.fn for f in demo.fns.values() if f.name == "on_run")
    noop = lambda *a, **k: None  # noqa: E731
    with pytest.raises(gr.Error) as info:
        handler([str(uploads / "broken.jpg")], 32, "Spectral", 60, 10, progress=noop)
    assert info.value.duration is None  # stays until closed (it vanished after 10 s)
    warnings = []
    monkeypatch.setattr(gr, "Warning", lambda message, duration=10, **k: warnings.append((message, duration)))
    *_, status = handler(
        [str(uploads / "a" / "photo.png"), str(uploads / "broken.jpg")], 32, "Spectral", 60, 10, progress=noop
    )
    assert "**1 image**" in status and "**Not processed (1):**\n- broken.jpg: not a recognised image format" in status
    assert warnings == [("1 of 2 files could not be processed: broken.jpg: not a recognised image format", None)]


def test_ply_is_capped_and_outputs_are_removed_on_exit(tiny_pipeline, uploads, tmp_path):
    results = process_images(
        tiny_pipeline, [uploads / "a" / "photo.png"], tmp_path / "o", processing_resolution=32, max_ply_points=300
    )
    points, _ = read_ply(results[0].downloads[3])
    assert 0 < len(points) == results[0].n_points <= 300  # 30x40 = 1200 pixels -> every second row and column
    from apdepth.demo import _display_copy

    assert _display_copy(np.zeros((30, 40, 3), np.uint8), max_side=20).shape == (15, 20, 3)  # the slider's copy

    demo = build_demo(tiny_pipeline, work_dir=tmp_path / "work", examples_dir=None)
    handler = next(f.fn for f in demo.fns.values() if f.name == "on_run")
    handler([str(uploads / "a" / "photo.png")], 32, "Spectral", 60, 10, progress=lambda *a, **k: None)
    (tmp_path / "work" / "keep.txt").write_text("not the demo's")
    assert len(list((tmp_path / "work").glob("run-*"))) == 1
    cached = tmp_path / "gradio-copy.png"  # a file Gradio copied into its cache for this app
    cached.write_bytes(b"x")
    demo.temp_file_sets[0].add(str(cached))
    demo.apdepth_cleanup()  # registered with atexit
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["keep.txt"]
    assert not cached.exists()
    own = build_demo(tiny_pipeline, examples_dir=None)  # its own temporary folder: removed entirely
    assert own.apdepth_work_dir.is_dir()
    own.apdepth_cleanup()
    assert not own.apdepth_work_dir.exists()
    import apdepth.demo as demo_module

    assert demo_module.GRADIO_DELETE_CACHE == (300, 900) and demo.delete_cache == (300, 900)


def test_page_says_which_model_runs(tiny_checkpoint):
    from apdepth.demo import model_description
    from apdepth.pipeline import ApDepthPipeline

    bundled = ApDepthPipeline.from_pretrained()
    text = model_description(bundled)
    assert text.startswith("**Model: the bundled small model**, trained only on this project's synthetic scenes")
    assert "`apdepth demo --checkpoint developy/ApDepth --prior depth-anything/Depth-Anything-V2-Small-hf`" in text
    assert model_description(ApDepthPipeline.from_pretrained(tiny_checkpoint)) == f"**Model:** `{tiny_checkpoint}`."
    demo = build_demo(bundled, examples_dir=None)
    header = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "apdepth-header")
    assert "the bundled small model" in header.value
    demo.apdepth_cleanup()
