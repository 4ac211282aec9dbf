"""Shared machinery of the dataset loaders: split parsing, decoding, masks, the sample dict.

Every loader returns the project's sample dict:

- ``rgb``: float32 tensor (3, H, W) in [0, 1];
- ``depth``: float32 tensor (H, W) in metres, 0 where the sensor gave nothing;
- ``valid``: bool tensor (H, W) = (min_depth < depth < max_depth) & dataset mask & evaluation crop;
- ``rgb_relpath``: the RGB path as written in the split file (relative to the dataset root).

A subclass states its protocol constants as class attributes (``min_depth``/``max_depth`` in
metres, the default ``processing_resolution`` of the evaluation protocol, ``alignment_max_res``,
whether ``boundary_metrics`` make sense for its ground truth) and implements the decoding.
Images are decoded without applying EXIF orientation: the ground truth is registered to the
stored pixel grid, not to how a viewer would rotate it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from apdepth.data.archive import Archive, normalize_relpath, open_archive, read_split_file

# KITTI benchmark crop (also applied to Virtual KITTI 2): bottom rows, centred columns.
KB_CROP_HEIGHT = 352
KB_CROP_WIDTH = 1216


@dataclass(frozen=True)
class SampleSpec:
    """Where one sample's files live inside the archive (normalised relative paths)."""

    rgb: str
    depth: str
    mask: str | None = None
    focal: float | None = None


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
    """Image bytes -> RGB float32 (H, W, 3) in [0, 1] (no EXIF rotation, see module doc)."""
    from PIL import Image, UnidentifiedImageError

    from apdepth.image_io import ImageReadError, pil_to_array

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return pil_to_array(im, name=name)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: not a readable image ({err})") from err


def decode_png16(data: bytes, name: str = "depth") -> np.ndarray:
    """A 16-bit single-channel PNG -> its raw integer values as float32 (H, W)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                raise ValueError(f"{name}: expected a 16-bit single-channel PNG, got mode {im.mode!r}")
            arr = np.asarray(im)
    except ValueError:
        raise
    except OSError as err:
        raise ValueError(f"{name}: not a readable 16-bit PNG ({err})") from err
    return arr.astype(np.float32)


def decode_npy(data: bytes, name: str = "array") -> np.ndarray:
    """``.npy`` bytes -> array; pickled objects are refused (never unpickle dataset files)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{name}: not a plain .npy array ({err})") from err


def kitti_benchmark_crop(arr: np.ndarray) -> np.ndarray:
    """Crop the last two axes to 352 x 1216: the bottom 352 rows and the centred 1216 columns."""
    h, w = arr.shape[-2:]
    if h < KB_CROP_HEIGHT or w < KB_CROP_WIDTH:
        raise ValueError(f"image of size {h}x{w} is smaller than the KITTI benchmark crop 352x1216")
    top = h - KB_CROP_HEIGHT
    left = (w - KB_CROP_WIDTH) // 2
    return arr[..., top : top + KB_CROP_HEIGHT, left : left + KB_CROP_WIDTH]


class DepthDataset(Dataset):
    """Base class of the RGB-D loaders: ``Dataset(data_dir, split_file=None, transform=None)``.

    ``data_dir`` is an uncompressed tar or the extracted folder. Without ``split_file`` the
    samples present in the archive are enumerated (see each subclass). ``transform`` is applied
    to the finished sample dict (e.g. training augmentation).
    """

    name: str = "base"
    min_depth: float = 1e-5
    max_depth: float = float("inf")
    processing_resolution: int = 0  # the protocol's default; 0 = native
    alignment_max_res: int | None = None  # fit scale/shift on a copy no larger than this
    boundary_metrics: bool = False  # dense GT: boundary F1 is meaningful
    # Marigold's archive name under the data root and split list name, for the eval suite
    archive_name: str | None = None
    split_names: tuple[str, ...] = ()  # relative to a copy of Marigold's data_split/ (old and new layout)

    def __init__(
        self,
        data_dir: str | os.PathLike | Archive,
        split_file: str | os.PathLike | None = None,
        transform: Callable[[dict], dict] | None = None,
    ):
        self.archive = data_dir if isinstance(data_dir, Archive) else open_archive(data_dir)
        self.split_file = split_file
        self.transform = transform
        if split_file is not None:
            specs = []
            for row in read_split_file(split_file):
                spec = self.parse_row(row)
                if spec is not None:
                    specs.append(spec)
        else:
            specs = self.enumerate()
        if not specs:
            source = f"split file {split_file}" if split_file else f"archive {self.archive.root}"
            raise ValueError(f"{self.name}: no samples with ground truth found in {source}")
        self.samples: list[SampleSpec] = specs

    # --- to implement ---------------------------------------------------------------------
    def parse_row(self, row: list[str]) -> SampleSpec | None:
        """One split-file row -> spec; None to skip (e.g. a ``None`` depth path)."""
        if len(row) < 2:
            raise ValueError(f"{self.name}: split line {' '.join(row)!r} needs an RGB and a depth path")
        if row[1] == "None":
            return None
        return SampleSpec(rgb=normalize_relpath(row[0]), depth=normalize_relpath(row[1]))

    def enumerate(self) -> list[SampleSpec]:
        """Samples present in the archive when no split file is given."""
        raise NotImplementedError

    def pair_members(self, depth_of: Callable[[str], str | None], rgbs: list[str] | None = None) -> list[SampleSpec]:
        """Enumeration shared by the loaders: each RGB member (default: every member) for which
        ``depth_of(rgb)`` names a depth member that exists in the archive becomes a sample."""
        specs = []
        for rgb in self.archive.list() if rgbs is None else rgbs:
            depth = depth_of(rgb)
            if depth is not None and self.archive.exists(depth):
                specs.append(SampleSpec(rgb=rgb, depth=depth))
        return specs

    def decode_depth(self, data: bytes, spec: SampleSpec, rgb_shape: tuple[int, int]) -> np.ndarray:
        """Depth file bytes -> float32 (H, W) metres; unknown pixels may be 0, inf or nan."""
        raise NotImplementedError

    def dataset_mask(self, spec: SampleSpec, depth: np.ndarray) -> np.ndarray | None:
        """The dataset's own validity mask (e.g. DIODE's), or None."""
        return None

    def eval_mask(self, height: int, width: int) -> np.ndarray | None:
        """The protocol's evaluation region (e.g. NYU's Eigen crop), or None for the whole image."""
        return None

    def crop(self, arr: np.ndarray) -> np.ndarray:
        """Crop applied to RGB (C,H,W) and depth (H,W) alike; identity unless overridden."""
        return arr

    def prepare_prediction(self, pred: np.ndarray) -> np.ndarray:
        """Bring a cached prediction made on the uncropped image onto the sample's grid."""
        return pred

    # --- shared -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def load_rgb(self, spec: SampleSpec) -> np.ndarray:
        """Decode the RGB file of ``spec`` to float32 (3, H, W) in [0, 1]."""
        arr = decode_rgb(self.archive.open(spec.rgb), name=spec.rgb)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))  # (3, H, W)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        spec = self.samples[index]
        rgb = self.load_rgb(spec)
        depth = self.decode_depth(self.archive.open(spec.depth), spec, rgb.shape[-2:])
        if depth.shape != rgb.shape[-2:]:
            raise ValueError(
                f"{self.name}: depth {spec.depth} has shape {depth.shape}, RGB {spec.rgb} has {rgb.shape[-2:]}"
            )
        depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
        mask = self.dataset_mask(spec, depth)
        rgb, depth = self.crop(rgb), self.crop(depth)
        if mask is not None:
            mask = self.crop(mask)
        valid = (depth > self.min_depth) & (depth < self.max_depth)
        if mask is not None:
            valid &= mask.astype(bool)
        region = self.eval_mask(*depth.shape)
        if region is not None:
            valid &= region
        sample = {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)),
            "rgb_relpath": spec.rgb,
        }
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples from {self.archive.root})"


def prefer_subfolder(paths: list[str], folder: str) -> list[str]:
    """Restrict to ``folder/`` when the archive has one (e.g. NYU's ``test/`` next to ``train/``)."""
    inside = [p for p in paths if p.startswith(folder + "/")]
    return inside if inside else paths
