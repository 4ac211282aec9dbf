"""Exact speed-ups of the model path: the same arithmetic, less of it.

* :class:`MeanFoldedConv`: the VAE decoder's last convolution makes 3 channels of which depth keeps only the
  mean. The mean is linear, so one convolution with the mean of the 3 filters (and of the 3 biases) gives the
  same map directly: a third of that layer's work and of the full-resolution output it writes.
* :class:`SharedContextAttnProcessor`: ApDepth's U-Net always attends to one constant context, the empty
  prompt's embedding, given as one row expanded to the batch. Its cross-attention keys and values are then
  the same for every image: they are projected once per call (from the one row) instead of once per image.

Both agree with the plain path to floating-point rounding (tests/test_fastpath.py); the pipeline turns them on
with :meth:`ApDepthPipeline.enable_exact_speedups`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MeanFoldedConv(nn.Module):
    """``conv`` followed by the mean over its output channels, as one convolution with one output channel.

    Shares ``conv``'s weight and bias (no copy, nothing new in a state dict) and folds them on every call, so it
    follows training updates, ``.to()`` and dtype changes. Input (B,C,H,W) -> output (B,1,H',W')."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("MeanFoldedConv needs a plain nn.Conv2d (groups=1, zero padding)")
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) -> (B,1,H',W'): the mean over ``conv``'s output channels, computed as one convolution."""
        c = self.conv
        # mean in fp32, then the layer's dtype: the same rounding as one half-precision weight
        weight = c.weight.float().mean(dim=0, keepdim=True).to(c.weight.dtype)
        bias = None if c.bias is None else c.bias.float().mean(dim=0, keepdim=True).to(c.bias.dtype)
        if c.weight.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, 1)


class SharedContextAttnProcessor:
    """Attention processor for a cross-attention layer whose context is one row expanded to the batch
    (``encoder_hidden_states.stride(0) == 0``, as ``EmptyTextEmbedding(b)`` returns it): keys and values are
    projected from that one row and expanded, instead of once per batch element. Any other call (self-attention,
    a real per-image context, masks, the layer options ApDepth's U-Nets do not use) goes to ``base`` unchanged."""

    def __init__(self, base):
        self.base = base

    @staticmethod
    def applies(attn, hidden_states, encoder_hidden_states, attention_mask, temb) -> bool:
        """Whether this call is the shared-context case the fast path handles (else ``base`` runs)."""
        return (
            encoder_hidden_states is not None
            and encoder_hidden_states.ndim == 3
            and encoder_hidden_states.shape[0] > 1
            and encoder_hidden_states.stride(0) == 0
            and attention_mask is None
            and hidden_states.ndim == 3
            and attn.spatial_norm is None
            and attn.group_norm is None
            and not attn.residual_connection
            and attn.rescale_output_factor == 1.0
        )

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        """diffusers' attention-processor call; the same result as ``base`` with keys/values projected once."""
        if args or kwargs or not self.applies(attn, hidden_states, encoder_hidden_states, attention_mask, temb):
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        b = hidden_states.shape[0]
        context = encoder_hidden_states[:1]  # (1,L,D): the one row every image shares
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.to_q(hidden_states)
        key, value = attn.to_k(context), attn.to_v(context)  # (1,L,inner)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(1, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(1, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        key, value = key.expand(b, -1, -1, -1), value.expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def share_context_in_cross_attention(unet) -> int:
    """Give every cross-attention layer of a diffusers U-Net a :class:`SharedContextAttnProcessor` around its
    current processor; returns how many layers got one (0: nothing changed)."""
    count = 0
    for name, module in unet.named_modules():
        if getattr(module, "is_cross_attention", False) and hasattr(module, "set_processor"):
            proc = module.processor
            if not isinstance(proc, SharedContextAttnProcessor):
                module.set_processor(SharedContextAttnProcessor(proc))
            count += 1
    return count


def unshare_context_in_cross_attention(unet) -> None:
    """Undo :func:`share_context_in_cross_attention`."""
    for module in unet.modules():
        proc = getattr(module, "processor", None)
        if isinstance(proc, SharedContextAttnProcessor):
            module.set_processor(proc.base)
