"""Training losses (method.md §2): masked latent MSE, the latent frequency loss, pixel L1, and the
losses of the auxiliary tasks (VAE reconstruction, scale-and-shift-invariant disparity for the prior).

Latents are (B, C, h, w) with h = H/f, w = W/f (f: the VAE's downsampling factor, ``pipe.vae_scale_factor``);
masks are boolean and broadcast over channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def latent_valid_mask(valid: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel mask (B, H, W) -> latent mask (B, 1, H/factor, W/factor); ``factor`` is the VAE's downsampling
    factor (``ApDepthPipeline.vae_scale_factor``). Raises ValueError if H or W is not a multiple of it.

    A latent cell is valid only if *all* factor x factor pixels under it are valid (a min-pool), so the
    loss never rewards reproducing the encoding of holes in the GT.
    """
    if valid.ndim != 3:
        raise ValueError(f"valid must be (B, H, W), got shape {tuple(valid.shape)}")
    h, w = valid.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"mask size {h}x{w} is not a multiple of {factor}")
    v = valid[:, None].float()
    return (-F.max_pool2d(-v, kernel_size=factor, stride=factor)) > 0.5


def _zero_like_graph(x: torch.Tensor) -> torch.Tensor:
    # A zero that still depends on x, so backward() works on a batch without valid cells.
    return x.sum() * 0.0


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` (broadcastable) is set; a graph-connected 0 if none."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype).expand_as(values)
    n = m.sum()
    if n == 0:
        return _zero_like_graph(like)
    return (values * m).sum() / n


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of (pred - target)^2 over valid cells and all channels; mask (B, 1, h, w) or None."""
    return _masked_mean((pred.float() - target.float()) ** 2, mask, pred)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |pred - target| over valid entries (mask broadcastable to pred) or all entries."""
    return _masked_mean((pred.float() - target.float()).abs(), mask, pred)


def frequency_weights(h: int, w: int, alpha: float = 1.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """W = 1 + alpha * r / r_max on the centred (fftshifted) (h, w) spectrum.

    r is the Euclidean distance, in index units, from the zero-frequency bin (which fftshift puts at
    (h // 2, w // 2)); r_max is its largest value on the grid, the distance to the farthest corner.
    """
    i = torch.arange(h, device=device, dtype=torch.float64) - (h // 2)
    j = torch.arange(w, device=device, dtype=torch.float64) - (w // 2)
    r = torch.sqrt(i[:, None] ** 2 + j[None, :] ** 2)
    r_max = r.max()
    if r_max > 0:
        r = r / r_max
    return (1.0 + alpha * r).to(dtype)


def amplitude_spectrum(x: torch.Tensor) -> torch.Tensor:
    """(…, h, w) real -> |FFT2| with the zero frequency shifted to the centre, same shape."""
    spec = torch.fft.fft2(x, dim=(-2, -1))
    return torch.fft.fftshift(spec, dim=(-2, -1)).abs()


def latent_frequency_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    alpha: float = 1.0,
    norm: str = "l1",
) -> torch.Tensor:
    """The latent frequency loss L_freq of method.md §2.

    Both latents (B, C, h, w) are zeroed outside ``mask`` (B, 1, h, w); per sample and channel the 2-D
    FFT over (h, w) is centred and reduced to its amplitude; the loss is the mean over all entries of
    W * |A_pred - A_gt| (``norm="l1"``) or W * (A_pred - A_gt)^2 (``norm="l2"``), with W from
    :func:`frequency_weights`. Computed in float32 (float64 inputs stay float64).
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"pred and target must both be (B, C, h, w); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    p, t = pred.to(dtype), target.to(dtype)
    if mask is not None:
        m = mask.to(dtype)
        p, t = p * m, t * m
    diff = amplitude_spectrum(p) - amplitude_spectrum(t)
    diff = diff.abs() if norm == "l1" else diff**2
    weights = frequency_weights(p.shape[-2], p.shape[-1], alpha, device=p.device, dtype=dtype)
    return (diff * weights).mean()


def scale_shift_invariant_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MiDaS-style loss on (B, H, W) maps: each image's prediction and target are normalised by their own
    median and mean absolute deviation over valid pixels, then compared by L1 (mean over valid pixels,
    then over images). Invariant to a positive scale and a shift of either map."""
    losses = []
    for p, t, m in zip(pred.float(), target.float(), mask.bool()):
        if m.sum() < 2:
            losses.append(_zero_like_graph(p))
            continue
        pv, tv = p[m], t[m]

        def norm(v):
            med = v.median()
            return (v - med) / (v - med).abs().mean().clamp_min(1e-6)

        losses.append((norm(pv) - norm(tv)).abs().mean())
    return torch.stack(losses).mean()


def kl_per_element(posterior) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) of a diffusers DiagonalGaussianDistribution, averaged per latent element."""
    mean, logvar = posterior.mean.float(), posterior.logvar.float()
    return 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).mean()


__all__ = [
    "latent_valid_mask",
    "masked_mse",
    "masked_l1",
    "frequency_weights",
    "amplitude_spectrum",
    "latent_frequency_loss",
    "scale_shift_invariant_l1",
    "kl_per_element",
]
