"""Training-time transforms on sample dicts, and the depth normalisation of the training target.

The target of ApDepth's training is per-image affine-invariant depth: the 2% and 98% quantiles
of the valid depth map onto -1 (near) and +1 (far), then clip to [-1, 1]. Quantiles rather than
min/max keep a few stray far or near pixels from squashing the rest of the range.
"""

from __future__ import annotations

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
