"""Model presets (paper-size, small, tiny) and builders for every weight-bearing component.

Presets are dataclasses: the architecture lives in code with names, not in scattered dicts, and a
YAML config selects one by name (``model: {preset: small}``) with explicit overrides.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from apdepth.models.text_embedding import EmptyTextEmbedding


@dataclass
class ModelPreset:
    """Architecture of the three weight-bearing parts plus the inference defaults stored with them."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    prior: dict[str, Any] | None  # DepthAnythingConfig kwargs with a ``backbone`` dict (Dinov2Config kwargs)
    text_seq_len: int
    processing_resolution: int
    prior_input_size: int
    pipeline: dict[str, Any] = field(default_factory=dict)


def _unet(blocks, heads, cross_dim, layers=2, linear_proj=True, groups=32, sample_size=96, attention=None):
    """UNet2DConditionModel kwargs. ``attention``: one bool per level, finest first (default: every level
    but the coarsest, as in Stable Diffusion 2)."""
    n = len(blocks)
    attention = tuple(attention) if attention is not None else (True,) * (n - 1) + (False,)
    if len(attention) != n:
        raise ValueError(f"attention needs one flag per level ({n}), got {len(attention)}")
    return dict(
        sample_size=sample_size,
        in_channels=8,
        out_channels=4,
        layers_per_block=layers,
        block_out_channels=tuple(blocks),
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        cross_attention_dim=cross_dim,
        attention_head_dim=heads,
        use_linear_projection=linear_proj,
        norm_num_groups=groups,
    )


def _vae(blocks, layers=2, groups=32, sample_size=768, mid_attention=True):
    n = len(blocks)
    return dict(
        mid_block_add_attention=mid_attention,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(blocks),
        layers_per_block=layers,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


def _prior(hidden, layers, heads, out_indices, reassemble, neck, fusion, head_hidden, image_size=518):
    return dict(
        backbone=dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            patch_size=14,
            image_size=image_size,
            out_indices=list(out_indices),
            reshape_hidden_states=False,
        ),
        reassemble_hidden_size=reassemble,
        neck_hidden_sizes=list(neck),
        fusion_hidden_size=fusion,
        head_hidden_size=head_hidden,
    )


PRESETS: dict[str, ModelPreset] = {
    # Stable Diffusion 2 U-Net (conv_in widened to 8 channels), the SD VAE and Depth Anything V2 Small.
    "sd2": ModelPreset(
        name="sd2",
        unet=_unet((320, 640, 1280, 1280), (5, 10, 20, 20), 1024),
        vae=_vae((128, 256, 512, 512)),
        prior=_prior(384, 12, 6, (3, 6, 9, 12), 384, (48, 96, 192, 384), 64, 32),
        text_seq_len=77,
        processing_resolution=768,
        prior_input_size=518,
        pipeline=dict(prior_normalization="quantile"),
    ),
    # The bundled default model: same classes, small widths; trained on procedural scenes. Sized for a
    # 768x768 input in <= 0.5 s on a 2-core CPU at processing resolution 256 (~23 GFLOP per image):
    # a VAE that downsamples by 4 (not 8) so that a 256 px input keeps 64x64 latent cells and occlusion
    # edges survive the depth round trip; self-attention only at the U-Net's coarsest level (16x16 cells),
    # where it is cheap. See docs/training.md#sizing-the-bundled-model.
    "small": ModelPreset(
        name="small",
        unet=_unet((40, 80, 160), 8, 64, layers=1, groups=8, sample_size=64, attention=(False, False, True)),
        # No mid-block attention: at 768 px its 192x192-token attention costs more than the rest on a CPU.
        vae=_vae((16, 32, 64), layers=1, groups=8, sample_size=256, mid_attention=False),
        prior=_prior(64, 4, 4, (1, 2, 3, 4), 64, (16, 32, 64, 64), 32, 16, image_size=252),
        text_seq_len=8,
        processing_resolution=256,
        prior_input_size=252,
        pipeline=dict(prior_normalization="quantile"),
    ),
    # The architecture of the shipped bundled model (src/apdepth/weights/default/) and of the recipe that
    # trained it (configs/train/default_*.yaml): VAE downsampling 8, U-Net attention at the two finer levels.
    "small_v1": ModelPreset(
        name="small_v1",
        unet=_unet((32, 64, 128), 8, 64, layers=1, groups=16, sample_size=32),
        vae=_vae((12, 24, 48, 64), layers=1, groups=4, sample_size=256, mid_attention=False),
        prior=_prior(64, 4, 4, (1, 2, 3, 4), 64, (16, 32, 64, 64), 32, 16, image_size=252),
        text_seq_len=8,
        processing_resolution=256,
        prior_input_size=252,
        pipeline=dict(prior_normalization="quantile"),
    ),
    # For tests: builds and runs in well under a second on a CPU.
    "tiny": ModelPreset(
        name="tiny",
        unet=_unet((16, 32), 4, 16, layers=1, groups=8, sample_size=8),
        vae=_vae((8, 8, 16, 16), layers=1, groups=4, sample_size=64),
        prior=_prior(16, 4, 2, (1, 2, 3, 4), 16, (8, 8, 16, 16), 8, 8, image_size=56),
        text_seq_len=4,
        processing_resolution=64,
        prior_input_size=56,
        pipeline=dict(prior_normalization="quantile"),
    ),
}


def get_preset(name: str, **overrides) -> ModelPreset:
    """A deep copy of preset ``name`` with fields replaced by ``overrides``: editing it (``preset.vae["layers"]``)
    never changes :data:`PRESETS`. Raises ValueError for an unknown name or field."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; available: {', '.join(PRESETS)}")
    preset = copy.deepcopy(PRESETS[name])
    for key, value in overrides.items():
        if not hasattr(preset, key):
            raise ValueError(f"unknown preset field {key!r}")
        setattr(preset, key, value)
    return preset


def build_unet(cfg: dict[str, Any], in_channels: int | None = None):
    """A ``UNet2DConditionModel`` from preset kwargs, optionally with ``in_channels`` replaced."""
    from diffusers import UNet2DConditionModel

    cfg = dict(cfg)
    if in_channels is not None:
        cfg["in_channels"] = in_channels
    return UNet2DConditionModel(**cfg)


def build_vae(cfg: dict[str, Any]):
    """An ``AutoencoderKL`` from preset kwargs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**cfg)


def build_prior(cfg: dict[str, Any], class_name: str | None = None):
    """A randomly initialised prior of family ``class_name`` (default Depth Anything; see :mod:`apdepth.priors`)
    from preset kwargs (for Depth Anything: DepthAnythingConfig kwargs with a ``backbone`` dict of Dinov2Config kwargs)."""
    from apdepth.priors import DEFAULT_PRIOR_CLASS, get_prior_adapter

    return get_prior_adapter(class_name or DEFAULT_PRIOR_CLASS).build(cfg)


def widen_conv_in(unet, new_in_channels: int = 8):
    """Widen a U-Net's first convolution by repeating its kernel along the input axis and dividing by the
    repeat factor (bias unchanged), so that feeding the same latent twice reproduces the original output."""
    old = unet.conv_in
    if old.in_channels == new_in_channels:
        return unet
    if new_in_channels % old.in_channels:
        raise ValueError(f"cannot widen conv_in from {old.in_channels} to {new_in_channels} channels")
    reps = new_in_channels // old.in_channels
    new = torch.nn.Conv2d(
        new_in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None
    )
    with torch.no_grad():
        new.weight.copy_(old.weight.repeat(1, reps, 1, 1) / reps)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    unet.conv_in = new
    unet.register_to_config(in_channels=new_in_channels)
    return unet


def build_pipeline(preset: str | ModelPreset = "tiny", seed: int = 0, use_prior: bool = True, **pipeline_config):
    """A pipeline with randomly initialised weights for the given preset (deterministic by ``seed``)."""
    from apdepth.pipeline import ApDepthPipeline

    preset = get_preset(preset) if isinstance(preset, str) else preset
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's random state
        torch.manual_seed(seed)
        unet = build_unet(preset.unet, in_channels=8 if use_prior else 4)
        vae = build_vae(preset.vae)
        prior = build_prior(preset.prior) if use_prior and preset.prior else None
    emb = torch.randn(1, preset.text_seq_len, preset.unet["cross_attention_dim"], generator=gen)
    config = dict(
        processing_resolution=preset.processing_resolution,
        prior_input_size=preset.prior_input_size,
        **preset.pipeline,
    )
    config.update(pipeline_config)
    return ApDepthPipeline(
        unet=unet, vae=vae, prior=prior, text_embedding=EmptyTextEmbedding.from_tensor(emb), **config
    )


def build_tiny_pipeline(seed: int = 0, **kwargs):
    """Tiny random pipeline for tests and examples (runs in well under a second on a CPU)."""
    return build_pipeline("tiny", seed=seed, **kwargs)
