"""Input and output handling of :class:`~apdepth.pipeline.ApDepthPipeline` (diffusers' image-processor role).

Everything between what a user passes and the tensors the models see, and back:

* :meth:`ApDepthImageProcessor.preprocess`: PIL images (EXIF orientation applied, as ``apdepth predict`` and
  the demo do), numpy arrays and torch tensors, single or batched, of any sizes -> a list of (3, H, W) float32
  CPU tensors in [0, 1];
* :func:`processing_size`: the size the model runs at, longer side = the processing resolution;
* :meth:`ApDepthImageProcessor.resize` / :meth:`~ApDepthImageProcessor.pad`: each image resized on its own
  (so images of one aspect ratio but different sizes batch together) and padded to a multiple of the VAE's
  downsampling factor;
* :func:`to_output`: lists of (H, W) maps -> numpy or torch, stacked when the sizes agree.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MIN_SIZE = 8  # smallest accepted input side in pixels


def processing_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(H, W) the model runs at: the longer side becomes ``resolution`` (aspect ratio kept, each side at least 1);
    ``0`` keeps the native size. Both sides are therefore at most ``resolution``."""
    if resolution < 0:
        raise ValueError("processing_resolution must be >= 0 (0 = native size)")
    if resolution == 0:
        return height, width
    scale = resolution / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def to_tensor(image, index: int = 0) -> torch.Tensor:
    """One input image -> (3, H, W) float32 CPU tensor in [0, 1].

    Accepts a PIL image (any mode; its EXIF orientation is applied), a numpy array (H, W), (H, W, 1|3|4) of uint8
    (0..255), uint16 (0..65535) or float in [0, 1], or a torch tensor (C, H, W) with C in 1/3/4 (uint8 or float
    in [0, 1]). Alpha is dropped, grey is repeated to three channels. Raises ValueError, naming the image by
    ``index``, for other types or shapes, sides below 8 pixels, non-finite values or floats outside [0, 1].
    """
    from PIL import Image, ImageOps

    from apdepth.image_io import pil_to_array

    if isinstance(image, Image.Image):
        oriented = ImageOps.exif_transpose(image)  # a phone photo is stored sideways with an orientation tag
        t = torch.from_numpy(pil_to_array(oriented, name=f"image {index}")).permute(2, 0, 1).contiguous()
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise ValueError(f"image {index}: numpy images must be (H,W), (H,W,1), (H,W,3) or (H,W,4); got {arr.shape}")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        else:
            arr = arr.astype(np.float32)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"image {index}: tensors must be (C,H,W) with C in 1/3/4; got {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        t = t.float().cpu()
    else:
        raise ValueError(f"image {index}: unsupported type {type(image).__name__}; use PIL, numpy or torch")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 4:
        t = t[:3]
    if t.shape[1] < MIN_SIZE or t.shape[2] < MIN_SIZE:
        raise ValueError(
            f"image {index}: too small ({t.shape[1]}x{t.shape[2]}); at least {MIN_SIZE}x{MIN_SIZE} pixels are needed"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"image {index}: contains NaN or infinite values")
    if t.min() < -1e-3 or t.max() > 1 + 1e-3:
        raise ValueError(
            f"image {index}: float values must be in [0, 1] (got {t.min().item():.3g}..{t.max().item():.3g}); "
            "pass uint8 arrays for 0..255 data"
        )
    return t.clamp(0, 1).contiguous()


def to_output(items, output_type: str):
    """List of (H, W) tensors -> an (N, H, W) numpy array (``"np"``, float32) or tensor (``"pt"``) when all sizes
    agree, else a list; ``None`` passes through."""
    if items is None or items[0] is None:
        return None
    same = all(t.shape == items[0].shape for t in items)
    if output_type == "pt":
        return torch.stack(items) if same else list(items)
    arrays = [t.float().cpu().numpy() for t in items]
    return np.stack(arrays) if same else arrays


class ApDepthImageProcessor:
    """Pre- and post-processing for a pipeline whose VAE downsamples by ``vae_scale_factor``."""

    def __init__(self, vae_scale_factor: int = 8):
        if vae_scale_factor < 1:
            raise ValueError(f"vae_scale_factor must be >= 1, got {vae_scale_factor}")
        self.vae_scale_factor = int(vae_scale_factor)

    @staticmethod
    def preprocess(images) -> list[torch.Tensor]:
        """One image or a batch (list/tuple, (B,C,H,W) tensor, (B,H,W,C) array) -> list of (3,H,W) float [0,1]
        tensors (see :func:`to_tensor`). Raises ValueError for an empty list or a bad image."""
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("no images given")
            return [to_tensor(im, i) for i, im in enumerate(images)]
        if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
            return [to_tensor(im, i) for i, im in enumerate(images)]
        return [to_tensor(images, 0)]

    @staticmethod
    def resize(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B,3,H,W) or (3,H,W) in [0,1] -> ``size`` (antialiased bilinear, clamped to [0,1]); unchanged if equal."""
        if tuple(rgb.shape[-2:]) == tuple(size):
            return rgb
        batched = rgb if rgb.ndim == 4 else rgb[None]
        out = F.interpolate(batched, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return out if rgb.ndim == 4 else out[0]

    def stack(self, images: list[torch.Tensor], size: tuple[int, int], device=None) -> torch.Tensor:
        """Resize each (3,H,W) image to ``size`` on ``device``, then stack: (B,3,h,w) float32. Resizing before
        stacking lets images of one aspect ratio but different sizes share a batch."""
        device = torch.device("cpu") if device is None else torch.device(device)
        out = []
        for im in images:
            if device.type == "cuda":  # pinned host memory: the copy runs asynchronously, the host goes on
                im = im.pin_memory()
            out.append(self.resize(im.to(device=device, dtype=torch.float32, non_blocking=True), size))
        return torch.stack(out)

    def pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pad (B,C,H,W) or (B,H,W) at the bottom/right, replicating the border, to multiples of
        ``vae_scale_factor``; returns the padded tensor and (pad_h, pad_w)."""
        f = self.vae_scale_factor
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % f, (-w) % f
        if not (pad_h or pad_w):
            return x, (0, 0)
        if x.ndim == 3:
            return F.pad(x[:, None], (0, pad_w, 0, pad_h), mode="replicate")[:, 0], (pad_h, pad_w)
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate"), (pad_h, pad_w)

    @staticmethod
    def resize_map(d: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """One (H,W) map (depth, prior depth) -> ``size``, bilinear; unchanged if equal."""
        if tuple(d.shape) == tuple(size):
            return d
        return F.interpolate(d[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
