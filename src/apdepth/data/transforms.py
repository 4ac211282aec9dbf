"""Training-time transforms on sample dicts, and the depth normalisation of the training target.

The target of ApDepth's training is per-image affine-invariant depth: the 2% and 98% quantiles
of the valid depth map onto -1 (near) and +1 (far), then clip to [-1, 1]. Quantiles rather than
min/max keep a few stray far or near pixels from squashing the rest of the range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch


def hflip(sample: dict) -> dict:
    """Mirror every (…, H, W) tensor of a sample left-right; other entries are kept as they are."""
    out = dict(sample)
    for key, value in sample.items():
        if key == "intrinsics" and isinstance(value, torch.Tensor):
            # mirroring moves the principal point: cx -> W - 1 - cx
            width = sample["rgb"].shape[-1]
            k = value.clone()
            k[0, 2] = (width - 1) - k[0, 2]
            out[key] = k
        elif isinstance(value, torch.Tensor) and value.ndim >= 2:
            out[key] = torch.flip(value, dims=[-1])
    return out


class RandomHorizontalFlip:
    """Flip a sample with probability ``p`` (0.5 in ApDepth's recipe); pass a torch.Generator to seed."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, sample: dict) -> dict:
        """The sample, flipped left-right (image, depth, mask, intrinsics) with probability ``p``."""
        if torch.rand((), generator=self.generator).item() < self.p:
            return hflip(sample)
        return sample


def _quantiles(values: torch.Tensor, qs: tuple[float, float]) -> tuple[float, float]:
    # torch.quantile refuses more than 2**24 values; sorting once works for any size and gives
    # the same linear interpolation between order statistics
    v, _ = torch.sort(values.flatten().double())
    n = v.numel()
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        out.append(float(v[lo] + (v[hi] - v[lo]) * frac))
    return out[0], out[1]


def normalize_depth_quantile(
    depth: torch.Tensor,
    valid: torch.Tensor,
    low: float = 0.02,
    high: float = 0.98,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map depth (metres, any shape (…, H, W)) to [-1, 1] using quantiles of its valid pixels.

    The ``low`` quantile goes to -1 (near), the ``high`` one to +1 (far); values are clipped to
    [-1, 1] unless ``clip=False``. Returns ``(norm, valid)`` with invalid pixels set to 0 in
    ``norm``. An image with no valid pixel, or whose quantiles coincide (a constant depth
    cannot be normalised), gets an all-False ``valid`` so that a loss ignores it.
    Operates per image: pass one (H, W) map at a time or a batch (B, H, W).
    """
    if depth.shape != valid.shape:
        raise ValueError(f"depth {tuple(depth.shape)} and valid {tuple(valid.shape)} must have the same shape")
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    if depth.ndim == 3:
        pairs = [normalize_depth_quantile(d, v, low, high, clip) for d, v in zip(depth, valid)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    if depth.ndim != 2:
        raise ValueError(f"expected depth of shape (H, W) or (B, H, W), got {tuple(depth.shape)}")
    valid = valid.bool() & torch.isfinite(depth)
    if not bool(valid.any()):
        return torch.zeros_like(depth, dtype=torch.float32), torch.zeros_like(valid)
    d_lo, d_hi = _quantiles(depth[valid], (low, high))
    if not d_hi > d_lo:
        return torch.zeros_like(depth, dtype=torch.float32), torch.zeros_like(valid)
    norm = (depth.double() - d_lo) / (d_hi - d_lo) * 2.0 - 1.0
    if clip:
        norm = norm.clamp(-1.0, 1.0)
    norm = torch.where(valid, norm, torch.zeros_like(norm)).float()
    return norm, valid


# Photometric domain randomisation ------------------------------------------------------------------
#
# Renders are clean in ways photographs are not: exact exposure, neutral white balance, no lens blur, no
# sensor noise, no compression. Training on renders with these nuisances drawn at random narrows the gap
# to photographs (domain randomisation: Tobin et al., IROS 2017). Geometry (depth, mask) is never changed.


@dataclass
class PhotometricConfig:
    """Ranges of the random camera effects applied to a training image (see :func:`photometric_augment`).

    ``probability`` is the chance that a sample is augmented at all (0 = off); each effect then applies
    with its own ``p_*``. Exposure in stops (a gain of ``2**stops``), white balance as a per-channel gain
    around 1, gamma on [0, 1] intensities, Gaussian blur sigma in pixels, noise standard deviation on the
    [0, 1] scale, JPEG quality 1-100 (Pillow's encoder).
    """

    probability: float = 0.0
    exposure_stops: List[float] = field(default_factory=lambda: [-1.0, 0.7])
    white_balance: float = 0.12  # per-channel gain drawn from [1 - wb, 1 + wb]
    gamma: List[float] = field(default_factory=lambda: [0.75, 1.35])
    contrast: List[float] = field(default_factory=lambda: [0.7, 1.3])
    saturation: List[float] = field(default_factory=lambda: [0.5, 1.4])
    p_blur: float = 0.3
    blur_sigma: List[float] = field(default_factory=lambda: [0.3, 1.5])
    p_noise: float = 0.5
    noise_std: List[float] = field(default_factory=lambda: [0.003, 0.04])
    p_jpeg: float = 0.4
    jpeg_quality: List[int] = field(default_factory=lambda: [35, 95])


def photometric_augment(rgb: torch.Tensor, rng: np.random.Generator, cfg: PhotometricConfig) -> torch.Tensor:
    """Randomly perturb an image as a real camera would.

    Args:
        rgb: (3, H, W) float tensor in [0, 1].
        rng: the sample's generator (the result is a pure function of its state, so resumed training
            reproduces the same augmentation).
        cfg: the ranges; ``cfg.probability == 0`` returns ``rgb`` unchanged.

    Returns:
        (3, H, W) float32 tensor in [0, 1]. Order: exposure, white balance, contrast, saturation, gamma,
        blur, sensor noise, JPEG round trip (Pillow), which is the order these arise in a camera.

    Raises:
        ValueError: if ``rgb`` is not (3, H, W).
    """
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"rgb must be (3, H, W), got shape {tuple(rgb.shape)}")
    if cfg.probability <= 0 or rng.random() >= cfg.probability:
        return rgb
    x = rgb.detach().float().cpu().numpy().transpose(1, 2, 0)  # (H, W, 3)
    x = x * 2.0 ** rng.uniform(*cfg.exposure_stops)
    x = x * rng.uniform(1 - cfg.white_balance, 1 + cfg.white_balance, size=3)[None, None]
    x = np.clip(x, 0, 1)
    mean = x.mean()
    x = np.clip((x - mean) * rng.uniform(*cfg.contrast) + mean, 0, 1)
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = np.clip(grey[..., None] + (x - grey[..., None]) * rng.uniform(*cfg.saturation), 0, 1)
    x = x ** rng.uniform(*cfg.gamma)
    from PIL import Image, ImageFilter

    need_pil = rng.random() < cfg.p_blur
    sigma = rng.uniform(*cfg.blur_sigma)
    if need_pil:
        im = Image.fromarray((x * 255 + 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius=sigma))
        x = np.asarray(im, dtype=np.float32) / 255.0
    if rng.random() < cfg.p_noise:
        x = np.clip(x + rng.normal(0.0, rng.uniform(*cfg.noise_std), size=x.shape), 0, 1)
    if rng.random() < cfg.p_jpeg:
        import io

        buf = io.BytesIO()
        Image.fromarray((x * 255 + 0.5).astype(np.uint8)).save(
            buf, format="JPEG", quality=int(rng.integers(*cfg.jpeg_quality))
        )
        x = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))
