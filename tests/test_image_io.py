"""Robust image reading and atomic output writing."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from apdepth.image_io import ImageReadError, atomic_write, read_depth_png16, read_image, save_depth_outputs


def _save(path, im, **kw):
    im.save(path, **kw)
    return path


def test_modes_are_read_as_rgb_float(tmp_path):
    rgb = (np.arange(12 * 10 * 3) % 256).astype(np.uint8).reshape(12, 10, 3)
    cases = {
        "rgb.png": Image.fromarray(rgb),
        "grey.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((12, 10), 128, np.uint8)])),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "grey16.png": Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)),
        "photo.jpg": Image.fromarray(rgb),
    }
    for name, im in cases.items():
        arr = read_image(_save(tmp_path / name, im))
        assert arr.shape == (12, 10, 3) and arr.dtype == np.float32, name
        assert 0.0 <= arr.min() and arr.max() <= 1.0, name
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png"), rgb / 255.0, atol=1e-6)
    # 16-bit keeps its precision: value v*257 / 65535 == v/255.
    np.testing.assert_allclose(read_image(tmp_path / "grey16.png")[..., 0], rgb[..., 0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), rgb / 255.0, atol=1e-6)  # alpha dropped


def test_exif_rotation_is_applied(tmp_path):
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").shape == (20, 10, 3)


@pytest.mark.parametrize(
    "kind, message", [("empty", "empty"), ("text", "not a recognised image"), ("truncated", "corrupt or truncated")]
)
def test_bad_files_name_the_file(tmp_path, kind, message):
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello")
    else:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("killed")
    assert not target.exists() and os.listdir(tmp_path) == []


def test_depth_outputs_round_trip(tmp_path):
    depth = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    paths = save_depth_outputs(tmp_path, "img", depth)
    assert [p.name for p in paths] == ["img_depth.npy", "img_depth.png", "img_depth_colored.png"]
    np.testing.assert_array_equal(np.load(paths[0]), depth)
    with Image.open(paths[1]) as im:
        assert im.mode.startswith("I") and im.size == (40, 30)
    np.testing.assert_allclose(read_depth_png16(paths[1]), depth, atol=1 / 65535)
    with Image.open(paths[2]) as im:
        assert im.mode == "RGB" and im.size == (40, 30)
    assert len(save_depth_outputs(tmp_path / "nc", "img", depth, color_map=None)) == 2


def test_oversized_image_is_a_named_error_not_a_crash(tmp_path, monkeypatch):
    import PIL.Image

    path = tmp_path / "huge.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    # PIL refuses images above twice MAX_IMAGE_PIXELS (decompression-bomb guard); shrink the limit
    # instead of writing a 180-megapixel file.
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="image too large") as info:
        read_image(path)
    assert str(path) in str(info.value)
