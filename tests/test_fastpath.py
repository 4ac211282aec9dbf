"""Exact speed-ups: the folded decoder output and the shared cross-attention context compute the same depth."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from apdepth.fastpath import MeanFoldedConv, SharedContextAttnProcessor, share_context_in_cross_attention


@pytest.mark.parametrize("channels_last", [False, True])
def test_mean_folded_conv_equals_conv_then_channel_mean(channels_last):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 3, 3, padding=1)
    x = torch.randn(2, 16, 20, 24)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    folded = MeanFoldedConv(conv)
    ref = conv(x).mean(dim=1, keepdim=True)
    out = folded(x)
    assert out.shape == (2, 1, 20, 24)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert list(dict(folded.named_parameters())) == ["conv.weight", "conv.bias"]  # shared, not copied
    with pytest.raises(ValueError):
        MeanFoldedConv(torch.nn.Conv2d(4, 4, 3, groups=2))


def test_shared_context_projects_keys_once_and_gives_the_same_unet_output(tiny_pipeline):
    unet = copy.deepcopy(tiny_pipeline.unet)
    torch.manual_seed(1)
    b = 3
    sample = torch.randn(b, unet.config.in_channels, 8, 8)
    t = torch.full((b,), 1, dtype=torch.long)
    cond = tiny_pipeline.text_embedding(b)
    assert cond.stride(0) == 0  # the pipeline's conditioning: one row, expanded
    with torch.no_grad():
        ref = unet(sample, t, encoder_hidden_states=cond, return_dict=False)[0]

    seen = []
    hooks = [
        m.to_k.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
        for m in unet.modules()
        if getattr(m, "is_cross_attention", False)
    ]
    assert share_context_in_cross_attention(unet) == len(hooks) > 0
    with torch.no_grad():
        out = unet(sample, t, encoder_hidden_states=cond, return_dict=False)[0]
        seen_shared = list(seen)
        seen.clear()
        # a real per-image context (not an expanded row) takes the plain path
        per_image = cond.clone() + 0.01 * torch.randn_like(cond)
        unet(sample, t, encoder_hidden_states=per_image, return_dict=False)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert set(seen_shared) == {1}  # keys projected once per call, not once per image
    assert set(seen) == {b}


def test_pipeline_exact_speedups_keep_the_depth_and_leave_the_vae_and_weights_alone(tiny_pipeline):
    pipe = copy.deepcopy(tiny_pipeline)
    rng = np.random.default_rng(0)
    images = [rng.random((40, 56, 3), dtype=np.float32) for _ in range(3)]
    ref = pipe(images, batch_size=3, output_type="pt").depth
    keys = {k: v.shape for k, v in pipe.vae.state_dict().items()}
    pipe.enable_exact_speedups()
    out = pipe(images, batch_size=3, output_type="pt").depth
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert {k: v.shape for k, v in pipe.vae.state_dict().items()} == keys
    assert not isinstance(pipe.vae.decoder.conv_out, MeanFoldedConv)  # only swapped in during decode_depth
    z = torch.randn(1, pipe.vae.config.latent_channels, 4, 4)
    with torch.no_grad():
        assert pipe.vae.decode(z).sample.shape[1] == 3  # training's reconstruction still sees RGB
    pipe.disable_exact_speedups()
    assert not any(isinstance(getattr(m, "processor", None), SharedContextAttnProcessor) for m in pipe.unet.modules())
    torch.testing.assert_close(pipe(images, batch_size=3, output_type="pt").depth, ref, rtol=0, atol=0)
