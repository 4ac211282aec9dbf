"""The depth prior (Depth Anything V2 through transformers) and its normalisation (method.md §1, steps 3-4).

Two normalisations exist, selected by the pipeline config ``prior_normalization``:

``raw``
    What the published ApDepth V1 weights were trained with: the prior sees the image in [-1, 1]
    (no ImageNet mean/std), resized up to the next multiple of 14, and its raw, unbounded disparity
    is passed on unchanged.
``quantile``
    The prior sees its proper input (ImageNet-normalised, shorter side = ``prior_input_size``, a
    multiple of 14); its disparity is mapped per image so that the 2% / 98% quantiles become
    +1 / -1 (near = -1, far = +1: the depth target's polarity), then clipped to [-1, 1].

Licences: Depth Anything V2 *Small* is Apache-2.0; the Base/Large/Giant sizes are CC-BY-NC-4.0
(non-commercial). Choose the prior accordingly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PRIOR_NORMALIZATIONS = ("raw", "quantile")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14


def _ceil_to(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m)


#: ``quantile`` mode: the prior's longer side is at most this many times ``prior_input_size``, so an extreme aspect
#: ratio (an 8x1024 strip) cannot blow its input up (to 518x66304 px) while every usual photo keeps the shorter
#: side at ``prior_input_size``.
MAX_PRIOR_ASPECT = 4


def prior_input_size(height: int, width: int, normalization: str, input_size: int) -> tuple[int, int]:
    """The (H, W), multiples of 14, the prior runs at for an image of the given processing size.

    ``raw``: the processing size rounded up to multiples of 14. ``quantile``: the shorter side becomes
    ``input_size`` unless the longer side would then exceed ``MAX_PRIOR_ASPECT * input_size``; then the longer
    side is that bound. Both sides are therefore bounded for any aspect ratio.
    """
    if normalization == "raw":
        return _ceil_to(height, PATCH), _ceil_to(width, PATCH)
    scale = min(input_size / min(height, width), MAX_PRIOR_ASPECT * input_size / max(height, width))
    return (
        max(PATCH, int(round(height * scale / PATCH)) * PATCH),
        max(PATCH, int(round(width * scale / PATCH)) * PATCH),
    )


def prepare_prior_input(
    rgb: torch.Tensor,
    normalization: str,
    input_size: int = 518,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """rgb (B,3,H,W) in [0,1] -> the prior's pixel_values (B,3,H',W'), H' and W' multiples of 14."""
    if normalization not in PRIOR_NORMALIZATIONS:
        raise ValueError(f"prior_normalization must be one of {PRIOR_NORMALIZATIONS}, got {normalization!r}")
    h, w = rgb.shape[-2:]
    size = prior_input_size(h, w, normalization, input_size)
    x = rgb
    if (h, w) != size:
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    if normalization == "raw":
        return x * 2.0 - 1.0
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def run_prior(prior: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Call a DepthAnythingForDepthEstimation-like module; returns disparity (B, H', W') (larger = nearer)."""
    out = prior(pixel_values=pixel_values)
    disp = out.predicted_depth if hasattr(out, "predicted_depth") else out
    if disp.ndim == 4:
        disp = disp[:, 0]
    return disp


def normalize_prior_disparity(
    disparity: torch.Tensor,
    normalization: str,
    low: float = 0.02,
    high: float = 0.98,
) -> torch.Tensor:
    """(B,H,W) disparity -> the tensor fed to the VAE. ``raw``: unchanged. ``quantile``: q_low -> +1 (far),
    q_high -> -1 (near), clipped to [-1, 1]."""
    if normalization == "raw":
        return disparity
    if normalization != "quantile":
        raise ValueError(f"prior_normalization must be one of {PRIOR_NORMALIZATIONS}, got {normalization!r}")
    flat = disparity.float().flatten(1)
    q = torch.quantile(flat, torch.tensor([low, high], device=flat.device), dim=1)  # (2, B)
    lo, hi = q[0].view(-1, 1, 1), q[1].view(-1, 1, 1)
    scale = (hi - lo).clamp_min(1e-6)
    norm = 1.0 - 2.0 * (disparity.float() - lo) / scale
    return norm.clamp(-1.0, 1.0).to(disparity.dtype)


def prior_disparity_to_depth01(disparity: torch.Tensor) -> torch.Tensor:
    """For display: the prior's disparity as [0,1] depth-like map (0 = near), per-image min/max normalised."""
    flat = disparity.float().flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1)
    return 1.0 - (disparity.float() - lo) / (hi - lo).clamp_min(1e-12)


@torch.no_grad()
def condition_prior_output_range(
    prior: torch.nn.Module, pixel_values: torch.Tensor, low: float = 1.0, high: float = 2.0
) -> tuple[float, float]:
    """Fold an affine map into the prior's last convolution so that its output spans about [low, high].

    A scale-and-shift-invariant loss leaves a trained prior free to put its whole signal into a tiny
    range on top of a large offset (seen: 0.9965..0.9982). Under ``quantile`` normalisation and for the
    displayed prior depth only the ordering and relative spacing matter, so a positive affine map of the
    output changes nothing in fp32; but in bf16/fp16 a signal that is 0.2% of the offset is rounded away.
    ``pixel_values`` (calibration images, already prepared for the prior) fix the map: their pre-activation
    output range [y_min, y_max] is sent to [low, high]; ``low > 0`` keeps the final ReLU inactive with a margin.
    Only Depth Anything's head (``head.conv3`` followed by a ReLU) is supported. Returns (scale, offset).
    """
    head = getattr(prior, "head", None)
    conv = getattr(head, "conv3", None)
    if not isinstance(conv, torch.nn.Conv2d) or conv.out_channels != 1:
        raise ValueError("condition_prior_output_range expects a Depth Anything head with a 1-channel conv3")
    captured: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().float()))
    try:
        prior(pixel_values=pixel_values.to(conv.weight.dtype))
    finally:
        handle.remove()
    y = torch.cat([c.flatten() for c in captured])
    y_min, y_max = torch.quantile(y, 0.001).item(), torch.quantile(y, 0.999).item()
    if y_max <= y_min:
        raise ValueError("the prior's output is constant on the calibration images; nothing to condition")
    scale = (high - low) / (y_max - y_min)
    offset = low - scale * y_min
    conv.weight.mul_(scale)
    if conv.bias is not None:
        conv.bias.mul_(scale).add_(offset)
    else:
        conv.bias = torch.nn.Parameter(torch.full((1,), offset, dtype=conv.weight.dtype, device=conv.weight.device))
    return scale, offset
