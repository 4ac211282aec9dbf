"""ApDepthPipeline: the one place inference happens (method.md §1).

One image in, affine-invariant depth out, with a single U-Net call:

    rgb ──resize/pad──► VAE.encode ─┐
     └──► prior ─► normalise ─► VAE.encode ─┴─► concat ─► U-Net(t) ─► VAE.decode ─► mean ─► depth

Every weight-bearing part (unet, vae, prior, text_embedding) is a registered component, so ``.to()``,
``save_pretrained``/``from_pretrained`` and offloading cover all of them; the inference defaults
(processing resolution, timestep, channel order, prior normalisation and input size) are stored with the
weights in ``model_index.json``.

What is not inference lives next door: input/output conversion in :mod:`apdepth.image_processor`, reading
weight folders (strict keys, the published layout's conversion) in :mod:`apdepth.checkpoint`, the prior's
pre-processing and normalisation in :mod:`apdepth.prior`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from apdepth.hub import CheckpointNotFoundError, resolve_checkpoint
from apdepth.image_processor import ApDepthImageProcessor, processing_size, to_output
from apdepth.models.text_embedding import EmptyTextEmbedding
from apdepth.prior import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRIOR_NORMALIZATIONS,
    normalize_prior_disparity,
    prior_disparity_to_depth01,
)

CHANNEL_ORDERS = ("prior_first", "rgb_first")
BUNDLED_MODEL_DIR = Path(__file__).parent / "weights" / "default"


@dataclass
class ApDepthOutput(BaseOutput):
    """Raw predictions.

    depth:
        Affine-invariant depth in [0, 1] (0 = near, 1 = far; unknown scale and shift). ``np.ndarray`` or
        ``torch.Tensor`` of shape (N, H, W) when all outputs share a size, else a list of (H, W) arrays. NaN
        where the model's output was not finite (broken weights, fp16 overflow): check before use.
    prior_depth:
        The prior's prediction shown the same way ([0, 1], 0 = near, min/max normalised per image), at the
        same resolution as ``depth``; ``None`` unless ``output_prior=True``.
    uncertainty:
        With ``ensemble_size > 1`` and ``output_uncertainty=True``: the standard deviation of the aligned
        ensemble members (same shape and units as ``depth``); else ``None``.
    """

    depth: Any
    prior_depth: Any = None
    uncertainty: Any = None


# Test-time ensemble members: (mirror the image?, factor on the processing resolution).
ENSEMBLE_MEMBERS = (
    (False, 1.0),
    (True, 1.0),
    (False, 0.75),
    (True, 0.75),
    (False, 1.25),
    (True, 1.25),
    (False, 0.5),
    (True, 0.5),
)


def _align_to(d: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Least-squares scale and shift of ``d`` onto ``ref`` (both affine-invariant depth maps)."""
    x, y = d.flatten().double(), ref.flatten().double()
    step = max(1, x.numel() // 65536)  # a subsample fits the two numbers as well as all pixels
    x, y = x[::step], y[::step]
    xm, ym = x.mean(), y.mean()
    var = ((x - xm) ** 2).sum()
    scale = ((x - xm) * (y - ym)).sum() / var if var > 0 else torch.ones((), dtype=x.dtype, device=x.device)
    return (d.double() * scale + (ym - scale * xm)).to(d.dtype)


class ApDepthPipeline(DiffusionPipeline):
    """Single-step, prior-conditioned latent-diffusion depth estimation.

    Components: ``unet`` (UNet2DConditionModel, 8 input channels, i.e. twice the VAE's latent channels; 4 for a
    model without prior),
    ``vae`` (AutoencoderKL), ``prior`` (transformers DepthAnythingForDepthEstimation, or ``None`` for the
    prior-free control model) and ``text_embedding`` (the cached empty-prompt embedding).
    """

    model_cpu_offload_seq = "prior->vae->unet->vae"
    _optional_components = ["prior"]

    def __init__(
        self,
        unet,
        vae,
        prior,
        text_embedding: EmptyTextEmbedding,
        processing_resolution: int = 768,
        timestep: int = 1,
        channel_order: str = "prior_first",
        prior_normalization: str = "quantile",
        prior_input_size: int = 518,
        prior_image_mean: tuple[float, float, float] = IMAGENET_MEAN,
        prior_image_std: tuple[float, float, float] = IMAGENET_STD,
    ):
        super().__init__()
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        if prior_normalization not in PRIOR_NORMALIZATIONS:
            raise ValueError(f"prior_normalization must be one of {PRIOR_NORMALIZATIONS}, got {prior_normalization!r}")
        if processing_resolution < 0:
            raise ValueError("processing_resolution must be >= 0 (0 = native size)")
        latent_channels = vae.config.latent_channels
        expected = 2 * latent_channels if prior is not None else latent_channels
        if unet.config.in_channels != expected:
            raise ValueError(
                f"the U-Net has {unet.config.in_channels} input channels but {expected} are needed "
                f"({'image + prior latents' if prior is not None else 'image latent only: no prior was given'}, "
                f"{latent_channels} channels each)"
            )
        self.register_modules(unet=unet, vae=vae, prior=prior, text_embedding=text_embedding)
        self.register_to_config(
            processing_resolution=int(processing_resolution),
            timestep=int(timestep),
            channel_order=channel_order,
            prior_normalization=prior_normalization,
            prior_input_size=int(prior_input_size),
            prior_image_mean=list(prior_image_mean),
            prior_image_std=list(prior_image_std),
        )
        self.fuse_vae_encode = True  # one encoder call for image and prior (same result: GroupNorm is per sample)

    def to(self, *args, **kwargs):
        """Move/cast every component (diffusers' ``DiffusionPipeline.to``). diffusers warns that fp16 pipelines
        "will fail" on a CPU, once per component; this pipeline's operations do run in fp16 on a CPU (slowly),
        so that warning is silenced (pass ``silence_dtype_warnings=False`` to see it)."""
        kwargs.setdefault("silence_dtype_warnings", True)
        return super().to(*args, **kwargs)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None = None,
        prior=None,
        torch_dtype: torch.dtype | None = None,
        allow_pickle: bool = False,
        local_files_only: bool | None = None,
        *,
        variant: str | None = None,
        revision: str | None = None,
        use_safetensors: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        strict: bool = True,
        **overrides,
    ) -> "ApDepthPipeline":
        """Load a pipeline folder or Hugging Face Hub id.

        ``None`` loads the bundled default model. Folders written by :meth:`save_pretrained` load as they are.
        The published layout (``model_index.json`` naming ``MarigoldDepthPipeline``, with ``unet/ vae/
        text_encoder/ tokenizer/``, as ``developy/ApDepth`` ships it) loads too; its prior is not inside and
        must be given as ``prior`` (hub id such as ``depth-anything/Depth-Anything-V2-Small-hf``, a folder, or
        a module); it uses ``raw`` prior normalisation and timestep 1 unless overridden (see
        :mod:`apdepth.checkpoint`). Keyword ``overrides`` replace stored inference defaults (e.g.
        ``processing_resolution=512``).

        ``variant``, ``revision``, ``use_safetensors``, ``cache_dir``, ``token`` and ``local_files_only`` mean what
        they mean in diffusers and apply to every component (see :class:`apdepth.checkpoint.LoadOptions`). Only
        safetensors weights are read unless ``allow_pickle=True``.

        Raises:
            CheckpointNotFoundError: the checkpoint or prior cannot be found, fetched or read.
            CheckpointMismatchError: a weight is missing, unexpected or wrongly shaped (``strict=False`` allows it,
                for deliberate conversions).
            ValueError: an unknown inference setting in ``overrides``.
        """
        from apdepth.checkpoint import LoadOptions, load_native, load_published

        for key in overrides:
            if key not in cls._config_keys():
                raise ValueError(f"unknown pipeline setting {key!r}; known: {cls._config_keys()}")
        opts = LoadOptions(
            allow_pickle=allow_pickle,
            variant=variant,
            revision=revision,
            use_safetensors=use_safetensors,
            cache_dir=None if cache_dir is None else str(cache_dir),
            token=token,
            local_files_only=local_files_only,
            strict=strict,
        )
        if pretrained_model_name_or_path is None:
            if not (BUNDLED_MODEL_DIR / "model_index.json").is_file():
                raise CheckpointNotFoundError(
                    "No checkpoint given and the bundled default model is missing from this installation "
                    f"({BUNDLED_MODEL_DIR}). Pass a checkpoint folder or hub id, e.g. "
                    "--checkpoint developy/ApDepth --prior depth-anything/Depth-Anything-V2-Small-hf"
                )
            pretrained_model_name_or_path = BUNDLED_MODEL_DIR
        root = resolve_checkpoint(pretrained_model_name_or_path, allow_pickle=allow_pickle, **opts.hub_kwargs())
        index = json.loads((root / "model_index.json").read_text())
        if index.get("_class_name", "") == cls.__name__:
            pipe = load_native(cls, root, index, prior, torch_dtype, opts)
        else:
            pipe = load_published(cls, root, index, prior, torch_dtype, opts)
        if overrides:
            pipe.register_to_config(**overrides)
            pipe._validate_config()
        # What was loaded, for the people looking at the results (the demo names it on its page).
        pipe.loaded_from = {
            "checkpoint": str(pretrained_model_name_or_path),
            "prior": None
            if prior is None
            else str(prior)
            if isinstance(prior, (str, os.PathLike))
            else type(prior).__name__,
            "bundled": Path(pretrained_model_name_or_path).resolve() == BUNDLED_MODEL_DIR.resolve(),
        }
        return pipe

    @classmethod
    def _config_keys(cls) -> list[str]:
        """Inference settings stored in model_index.json (the __init__ arguments that are not components)."""
        import inspect

        skip = {"self", "unet", "vae", "prior", "text_embedding"}
        return [k for k in inspect.signature(cls.__init__).parameters if k not in skip]

    def _validate_config(self):
        c = self.config
        if c.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {c.channel_order!r}")
        if c.prior_normalization not in PRIOR_NORMALIZATIONS:
            raise ValueError(
                f"prior_normalization must be one of {PRIOR_NORMALIZATIONS}, got {c.prior_normalization!r}"
            )

    # ------------------------------------------------------------------ fast paths (all off by default)

    def enable_vae_tiling(self, tile_size: int = 512, overlap: float = 0.25) -> None:
        """Encode/decode in overlapping ``tile_size`` pixel tiles (blended), so very large inputs (e.g. 4K at
        ``processing_resolution=0``) run in bounded memory. Results differ slightly near tile seams."""
        if tile_size % 64:
            raise ValueError("tile_size must be a multiple of 64")
        if not 0.0 <= overlap < 1.0:
            raise ValueError("overlap must be in [0, 1)")
        self.vae.enable_tiling()
        self.vae.tile_sample_min_size = tile_size
        self.vae.tile_latent_min_size = tile_size // self.vae_scale_factor
        self.vae.tile_overlap_factor = overlap

    def disable_vae_tiling(self) -> None:
        """Encode and decode whole images again (undo :meth:`enable_vae_tiling`)."""
        self.vae.disable_tiling()

    def enable_compile(
        self, cuda_graphs: bool = False, mode: str | None = None, dynamic: bool = False, cache_dir: str | None = None
    ) -> None:
        """``torch.compile`` the U-Net, the VAE encoder/decoder and the prior in place (weights, ``save_pretrained`` and
        ``.to()`` are unaffected). The first call per input shape pays the compile; Inductor's on-disk cache (``cache_dir``,
        default ``~/.cache/apdepth/inductor``) makes later processes reuse it.

        Args:
            cuda_graphs: also capture CUDA graphs (fixed shapes; best for repeated same-size batches on a GPU).
            mode: Inductor's tuning level, ``"default"`` (the default; quickest to compile) or ``"max-autotune"``
                (benchmarks kernel choices: many minutes longer to compile, often faster to run). Torch's own mode names
                (``"reduce-overhead"``, ``"max-autotune-no-cudagraphs"``) are accepted too; ``cuda_graphs=True`` turns a
                mode into its CUDA-graph form, so ``mode="default", cuda_graphs=True`` is ``"reduce-overhead"``.
            dynamic: compile for dynamic shapes (fewer recompiles for mixed sizes, slower kernels).
            cache_dir: folder for Inductor's on-disk cache. Inductor reads it only from the environment variable
                ``TORCHINDUCTOR_CACHE_DIR``, so giving a folder sets that variable; ``None`` (default) leaves the
                environment alone (torch's default folder, or the variable you set). The commands pass
                :func:`apdepth.runtime.default_compile_cache`.
        """
        mode = _compile_mode(mode or "default", cuda_graphs)
        import torch._inductor.config as inductor_config

        if cache_dir is not None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)  # asked for explicitly; Inductor has no other knob
        inductor_config.fx_graph_cache = True
        modules = [self.unet, self.vae.encoder, self.vae.decoder] + ([self.prior] if self.prior is not None else [])
        for module in modules:
            module.compile(mode=mode, dynamic=dynamic, fullgraph=False)
        self._cuda_graphs = mode in ("reduce-overhead", "max-autotune")
        self._static_batches = not dynamic  # pad a short last batch so that it reuses the compiled shapes

    def enable_exact_speedups(self) -> None:
        """Two speed-ups that compute the same depth (to floating-point rounding; see :mod:`apdepth.fastpath`):
        the decoder's last convolution makes the one mean channel that depth keeps instead of 3 channels to average
        (``vae.decode`` itself is untouched), and the U-Net's cross-attention projects the constant text
        conditioning's keys and values once per call instead of once per image. Undo with
        :meth:`disable_exact_speedups`."""
        from apdepth.fastpath import MeanFoldedConv, share_context_in_cross_attention

        self._folded_conv_out = MeanFoldedConv(self.vae.decoder.conv_out)
        share_context_in_cross_attention(self.unet)

    def disable_exact_speedups(self) -> None:
        """Undo :meth:`enable_exact_speedups` (the plain decoder output and cross-attention)."""
        from apdepth.fastpath import unshare_context_in_cross_attention

        self._folded_conv_out = None
        unshare_context_in_cross_attention(self.unet)

    def enable_channels_last(self) -> None:
        """channels_last memory format for the U-Net and VAE. Several times faster for oneDNN convolutions on a CPU;
        on a GPU it pays off with ``enable_compile`` and can slow eager runs."""
        for module in (self.unet, self.vae):
            module.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ building blocks

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side: ``2 ** (len(vae.config.block_out_channels) - 1)``, as in
        diffusers (8 for the Stable Diffusion VAE, 4 for a three-block VAE). Inputs are padded to a multiple of it."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def _exec_device(self) -> torch.device:
        # With model CPU offload the weights rest on the CPU; diffusers' hooks know where they run.
        return self._execution_device

    @property
    def _dtype(self) -> torch.dtype:
        return self.unet.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> scaled latent (B,C,H/f,W/f) with f = :attr:`vae_scale_factor`, posterior mean (no sampling)."""
        return self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode() * self.vae.config.scaling_factor

    def decode_depth(self, latent: torch.Tensor) -> torch.Tensor:
        """Depth latent (B,C,h,w) -> depth (B,h*f,w*f) in [0,1], 0 = near (f = :attr:`vae_scale_factor`)."""
        folded = getattr(self, "_folded_conv_out", None)
        decoder = self.vae.decoder
        if folded is not None:  # the mean over the 3 output channels folded into the last convolution (exact)
            original, decoder.conv_out = decoder.conv_out, folded
        try:
            rgb = self.vae.decode(latent.to(self.vae.dtype) / self.vae.config.scaling_factor).sample  # (B,3 or 1,H,W)
        finally:
            if folded is not None:
                decoder.conv_out = original
        mean = rgb.float().mean(dim=1)
        # Overflow (e.g. fp16) must not pass for a valid depth: clamp would turn +-inf into 1 or 0, so it becomes
        # NaN, which the clamp keeps and callers (predict's writer) detect.
        mean = torch.where(torch.isinf(mean), torch.nan, mean)
        return (mean.clamp(-1.0, 1.0) + 1.0) / 2.0

    @property
    def image_processor(self) -> ApDepthImageProcessor:
        """Input/output handling (:mod:`apdepth.image_processor`) for this pipeline's VAE."""
        return ApDepthImageProcessor(self.vae_scale_factor)

    def prior_disparity(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb (B,3,H,W) in [0,1] at processing size -> the prior's raw disparity (B,H,W) (larger = nearer),
        resized back to (H,W)."""
        from apdepth.priors import adapter_for

        c = self.config
        adapter = adapter_for(self.prior)  # the prior's family (apdepth.priors)
        # Resampling runs in fp32 (bicubic antialias has no half kernels on CPU); the prior in its own dtype.
        pixel_values = adapter.prepare_input(
            rgb.float(), c.prior_normalization, c.prior_input_size, c.prior_image_mean, c.prior_image_std
        )
        disp = adapter.run(self.prior, pixel_values.to(self.prior.dtype))  # (B,h',w')
        if disp.shape[-2:] != rgb.shape[-2:]:
            disp = F.interpolate(disp[:, None].float(), size=rgb.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return disp.float()

    def prior_condition(self, rgb: torch.Tensor, return_disparity: bool = False):
        """The prior condition the U-Net sees, for inference and training alike.

        rgb (B,3,H,W) in [0,1] at processing size -> the normalised prior (B,H,W) (``prior_normalization``:
        ``quantile`` in [-1, 1], -1 = near; ``raw`` unbounded), or ``None`` for a pipeline without prior. With
        ``return_disparity`` a pair (condition, raw disparity or None).
        """
        if self.prior is None:
            return (None, None) if return_disparity else None
        disp = self.prior_disparity(rgb)
        cond = normalize_prior_disparity(disp, self.config.prior_normalization)
        return (cond, disp) if return_disparity else cond

    def predict_latent(self, rgb: torch.Tensor, prior_input: torch.Tensor | None = None) -> torch.Tensor:
        """The model's forward pass on padded tensors; also used by training.

        rgb (B,3,H,W) in [0,1], H and W multiples of :attr:`vae_scale_factor` (f); prior_input (B,H,W) the
        normalised prior (or None for the prior-free model). Returns the predicted clean depth latent (B,C,H/f,W/f).
        """
        b = rgb.shape[0]
        x_rgb = rgb * 2.0 - 1.0
        if prior_input is None:
            z = self.encode(x_rgb)  # (B,C,h,w)
            sample = z
        else:
            x_prior = prior_input[:, None].expand(-1, 3, -1, -1).to(x_rgb.dtype)
            if self.fuse_vae_encode:
                z_rgb, z_prior = self.encode(torch.cat([x_rgb, x_prior])).chunk(2)
            else:
                z_rgb, z_prior = self.encode(x_rgb), self.encode(x_prior)
            pair = (z_prior, z_rgb) if self.config.channel_order == "prior_first" else (z_rgb, z_prior)
            sample = torch.cat(pair, dim=1)  # (B,2C,h,w)
        t = torch.full((b,), self.config.timestep, device=sample.device, dtype=torch.long)
        cond = self.text_embedding(b).to(device=sample.device, dtype=self.unet.dtype)
        return self.unet(sample.to(self.unet.dtype), t, encoder_hidden_states=cond, return_dict=False)[0]

    # ------------------------------------------------------------------ inference

    def check_inputs(
        self,
        processing_resolution: int | None,
        batch_size: int,
        output_type: str,
        output_prior: bool,
        ensemble_size: int,
        output_uncertainty: bool,
    ) -> int:
        """Validate :meth:`__call__`'s settings; returns the processing resolution to use. Raises ValueError
        naming the argument."""
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if output_prior and self.prior is None:
            raise ValueError("output_prior=True but this pipeline has no prior")
        res = self.config.processing_resolution if processing_resolution is None else int(processing_resolution)
        if res < 0:
            raise ValueError("processing_resolution must be >= 0 (0 = native size)")
        if not 1 <= ensemble_size <= len(ENSEMBLE_MEMBERS):
            raise ValueError(f"ensemble_size must be between 1 and {len(ENSEMBLE_MEMBERS)}, got {ensemble_size}")
        if output_uncertainty and ensemble_size < 2:
            raise ValueError("output_uncertainty needs ensemble_size >= 2")
        return res

    @torch.no_grad()
    def __call__(
        self,
        image,
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        batch_size: int = 1,
        output_type: str = "np",
        output_prior: bool = False,
        show_progress_bar: bool = False,
        ensemble_size: int = 1,
        output_uncertainty: bool = False,
    ) -> ApDepthOutput:
        """Predict depth for one image or a list of images (sizes may differ).

        Args:
            image: PIL image (EXIF orientation applied), numpy (H,W[,C]) (uint8, uint16 or float in [0,1]), torch
                (C,H,W) or (B,C,H,W), or a list of these.
            processing_resolution: longer side the model runs at; ``None`` = the stored default, 0 = native.
            match_input_resolution: resize the prediction back to each input's size (else processing size).
            batch_size: images per forward pass (images of the same processing size are batched together,
                whatever their input sizes).
            output_type: ``"np"`` (float32 numpy) or ``"pt"`` (torch tensors on the pipeline's device).
            output_prior: also return the prior's depth (``prior_depth``).
            ensemble_size: test-time ensemble of this many members (1 = off, at most 8): the image and its
                mirror image at the processing resolution, then both at 0.75×, 1.25× and 0.5× of it. Each member
                is aligned to the first by least-squares scale and shift; the result is their median.
            output_uncertainty: with an ensemble, also return the members' standard deviation.
        Returns:
            :class:`ApDepthOutput` with ``depth`` in [0, 1] (0 = near), (N,H,W) or a list for mixed sizes.
        Raises:
            ValueError: a bad setting (see :meth:`check_inputs`) or image (see :mod:`apdepth.image_processor`).
        """
        # 1. Check the settings.
        res = self.check_inputs(
            processing_resolution, batch_size, output_type, output_prior, ensemble_size, output_uncertainty
        )
        # 2. Images -> list of (3,H,W) float in [0,1].
        images = self.image_processor.preprocess(image)
        # 3. One forward pass per image, batched by processing size: resize, prior condition, encode, U-Net, decode.
        kwargs = dict(
            match_input_resolution=match_input_resolution, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        depth_out, prior_out = self._predict(images, res, output_prior=output_prior, **kwargs)
        # 4. Test-time ensemble: more members, aligned to the first, median-combined.
        uncertainty = None
        if ensemble_size > 1:
            depth_out, uncertainty = self._ensemble(images, res, depth_out, ensemble_size, **kwargs)
        # 5. With model CPU offload: every model back to the CPU, hooks reset for the next call.
        self.maybe_free_model_hooks()
        # 6. Outputs as numpy or torch.
        return ApDepthOutput(
            depth=to_output(depth_out, output_type),
            prior_depth=to_output(prior_out, output_type),
            uncertainty=to_output(uncertainty, output_type) if output_uncertainty else None,
        )

    def predict_video(self, frames, **kwargs):
        """Temporally consistent depth for a clip: see :func:`apdepth.video_depth.predict_video` (same arguments
        after ``frames``: a video path, a (T,H,W,3) array or a list of frames). Returns a ``VideoDepthOutput``
        whose ``depth`` is float32 (T,H,W) in [0, 1], 0 = near, with one affine map for the whole clip."""
        from apdepth.video_depth import predict_video

        return predict_video(self, frames, **kwargs)

    def _ensemble(self, images, res, first, ensemble_size, **kwargs):
        """Test-time ensemble: extra members (mirrored / rescaled), aligned to the first, median-combined."""
        members = [first]
        for flip, scale in ENSEMBLE_MEMBERS[1:ensemble_size]:
            imgs = [im.flip(-1) if flip else im for im in images]
            if res > 0:
                out, _ = self._predict(imgs, max(8, int(round(res * scale))), **kwargs)
            else:  # native resolution: scale each image's own longer side
                out = [
                    self._predict([im], max(8, int(round(max(im.shape[-2:]) * scale))), **kwargs)[0][0] for im in imgs
                ]
            members.append([o.flip(-1) if flip else o for o in out])
        depth, spread = [], []
        for i, ref in enumerate(first):
            stack = torch.stack(
                [_align_to(self.image_processor.resize_map(m[i], tuple(ref.shape)), ref) for m in members]
            )
            depth.append(stack.median(dim=0).values.clamp(0, 1))  # (H,W) from the (M,H,W) stack
            spread.append(stack.std(dim=0))
        return depth, spread

    def _predict(
        self, images, res, match_input_resolution=True, batch_size=1, output_prior=False, show_progress_bar=False
    ):
        """Depth (and prior depth) for each image: lists of (H,W) tensors, in input order."""
        processor = self.image_processor
        sizes = [tuple(im.shape[-2:]) for im in images]
        # Images sharing a processing size are batched together (each resized on its own first).
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (h, w) in enumerate(sizes):
            groups.setdefault(processing_size(h, w, res), []).append(i)
        depth_out: list[torch.Tensor | None] = [None] * len(images)
        prior_out: list[torch.Tensor | None] = [None] * len(images)
        device, dtype = self._exec_device, self._dtype
        chunks = [(ps, idx[k : k + batch_size]) for ps, idx in groups.items() for k in range(0, len(idx), batch_size)]
        for (ph, pw), idx in self.progress_bar(chunks) if show_progress_bar else chunks:
            if getattr(self, "_cuda_graphs", False):
                torch.compiler.cudagraph_mark_step_begin()  # a new pass: the graphs may reuse the last one's buffers
            rgb = processor.stack([images[i] for i in idx], (ph, pw), device)  # (B,3,ph,pw)
            if getattr(self, "_static_batches", False) and len(idx) < batch_size:
                # Compiled for fixed shapes: a short batch is padded with copies of its last image (every image is
                # processed on its own: GroupNorm is per sample) instead of compiling, and capturing, a new shape.
                rgb = torch.cat([rgb, rgb[-1:].expand(batch_size - len(idx), -1, -1, -1)])
            prior_in, disp = self.prior_condition(rgb, return_disparity=True)  # (B,ph,pw) each, or None
            rgb_p, _ = processor.pad(rgb)
            prior_p = None if prior_in is None else processor.pad(prior_in)[0]
            latent = self.predict_latent(rgb_p.to(dtype), None if prior_p is None else prior_p.to(dtype))
            depth = self.decode_depth(latent)[:, :ph, :pw]  # (B,ph,pw) in [0,1]
            for j, i in enumerate(idx):
                d = depth[j]
                p = prior_disparity_to_depth01(disp[j : j + 1])[0] if output_prior else None
                if match_input_resolution:
                    d = processor.resize_map(d, sizes[i])
                    p = None if p is None else processor.resize_map(p, sizes[i])
                depth_out[i] = d.clamp(0, 1)
                prior_out[i] = None if p is None else p.clamp(0, 1)
        return depth_out, prior_out


# Torch's compile modes as (tuning level, CUDA graphs).
_COMPILE_MODES = {
    ("default", False): "default",
    ("default", True): "reduce-overhead",
    ("max-autotune", False): "max-autotune-no-cudagraphs",
    ("max-autotune", True): "max-autotune",
}


def _compile_mode(mode: str, cuda_graphs: bool) -> str:
    """Resolve ``enable_compile``'s (mode, cuda_graphs) into one of torch.compile's mode names."""
    aliases = {"reduce-overhead": ("default", True), "max-autotune-no-cudagraphs": ("max-autotune", False)}
    if mode in aliases:
        level, graphs = aliases[mode]
        return _COMPILE_MODES[(level, graphs or cuda_graphs)]
    if mode not in ("default", "max-autotune"):
        raise ValueError(
            f"unknown compile mode {mode!r}: use 'default' or 'max-autotune' (or torch's 'reduce-overhead', "
            "'max-autotune-no-cudagraphs'), and cuda_graphs=True for CUDA graphs"
        )
    return _COMPILE_MODES[(mode, cuda_graphs)]
