"""What differs between the three training tasks: the model set-up, the loss, the export and the validation.

``apdepth``  the U-Net of an ApDepthPipeline (VAE, prior and text embedding frozen), latent losses.
``vae``      an AutoencoderKL reconstructing RGB images and 3-channel normalised depth maps.
``prior``    a DepthAnythingForDepthEstimation predicting relative disparity (scale/shift-invariant loss).

Everything else (optimiser, schedule, data order, checkpoints, logging) is the shared loop in trainer.py.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from apdepth.training import losses as L
from apdepth.training.config import ConfigError, TrainConfig


def component_dir(path: str, sub: str) -> Path:
    """A pretrained component given as a pipeline/run folder holding ``sub/`` or as the component folder."""
    p = Path(path).expanduser()
    if (p / sub / "config.json").is_file():
        return p / sub
    if (p / "config.json").is_file():
        return p
    raise ConfigError(f"model.{sub}: {path} holds neither {sub}/config.json nor config.json (a saved {sub} folder)")


def _load_vae(path: str, allow_pickle: bool):
    from diffusers import AutoencoderKL

    from apdepth.checkpoint import LoadOptions, load_component

    return load_component(
        AutoencoderKL, component_dir(path, "vae"), None, None, LoadOptions(allow_pickle=allow_pickle), "VAE"
    )


def _load_prior(path: str, allow_pickle: bool):
    from apdepth.checkpoint import LoadOptions, load_prior

    return load_prior(str(component_dir(path, "prior")), opts=LoadOptions(allow_pickle=allow_pickle))


def _freeze(module):
    if module is not None:
        module.requires_grad_(False)
        module.eval()
    return module


def _stack_images(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of equally sized HxWx3 uint8 panels -> one image (rows stacked vertically)."""
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)


def _rgb_u8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


class Task(abc.ABC):
    """What one kind of training run trains; the shared loop (:mod:`apdepth.training.trainer`) does the rest.

    A new task is one subclass registered in :data:`TASK_CLASSES` (and its name in ``config.TASKS``): it
    declares its ``loss_names`` (the names a stage's ``losses`` may weight; checked before training starts) and
    implements the four methods below. Class attributes tune the loop: ``export_name`` (sub-folder of the run
    folder the final model goes to), ``normalize_depth`` (batches carry ``depth_norm``), ``best_metric`` (the
    validation metric that selects ``best/``; ``None`` = no ``best/``) with ``lower_is_better``, and
    ``find_unused_parameters`` (for DDP).
    """

    name = ""
    loss_names: tuple[str, ...] = ()
    export_name = ""
    normalize_depth = True
    lower_is_better = True
    best_metric: str | None = None
    find_unused_parameters = False
    #: Training image sides must be multiples of this (the VAE's downsampling factor); set by :meth:`build`.
    size_multiple = 1

    def __init__(self, cfg: TrainConfig, device: torch.device, weight_dtype: torch.dtype):
        self.cfg, self.device, self.weight_dtype = cfg, device, weight_dtype

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None) and not cls.loss_names:
            raise TypeError(f"training task {cls.__name__} must declare its loss_names")

    @abc.abstractmethod
    def build(self) -> torch.nn.Module:
        """Create or load the model, move it to ``self.device`` and return the module whose parameters with
        ``requires_grad`` are optimised (wrapped by accelerate/DDP); set ``size_multiple`` if sizes matter."""

    @abc.abstractmethod
    def losses(self, model, batch: dict, weights: dict, noise_seed: int) -> dict[str, torch.Tensor]:
        """Scalar loss terms for one micro-batch: one entry per name in ``weights`` (a subset of ``loss_names``;
        the loop sums ``weight * term``). ``batch`` is what :class:`~apdepth.training.data.StepBatches` yields;
        ``noise_seed`` seeds any sampling, so a resumed run repeats it exactly."""

    @abc.abstractmethod
    def export(self, folder: Path) -> None:
        """Write the trained model to ``folder`` (loadable with ``from_pretrained``)."""

    @abc.abstractmethod
    def validate(self, dataset, accelerator) -> tuple[dict, np.ndarray | None]:
        """Metrics on ``dataset`` (name -> float; ``best_metric`` among them) and an optional HxWx3 uint8 image
        for the log. Runs under ``torch.no_grad``; must leave the model in training mode."""


# ---------------------------------------------------------------------------------------------- apdepth


class LatentPredictor(torch.nn.Module):
    """The trainable part (the U-Net) as a module whose forward is the pipeline's ``predict_latent``, so
    DDP and mixed precision wrap exactly the code inference runs. The pipeline is held outside the module
    tree (its frozen parts are not DDP parameters)."""

    def __init__(self, pipe):
        super().__init__()
        self.unet = pipe.unet
        self._pipe = (pipe,)

    def forward(self, rgb: torch.Tensor, prior_input: torch.Tensor | None) -> torch.Tensor:
        return self._pipe[0].predict_latent(rgb, prior_input)


def build_apdepth_pipeline(cfg: TrainConfig):
    """The pipeline to train: from a Stable Diffusion 2 folder (conv_in widened 4 -> 8), an ApDepth
    pipeline folder, or a preset with random weights; ``model.vae`` / ``model.prior`` replace those parts."""
    from apdepth.models import EmptyTextEmbedding, build_pipeline, get_preset, widen_conv_in
    from apdepth.pipeline import ApDepthPipeline

    m = cfg.model
    settings = dict(timestep=m.timestep, channel_order=m.channel_order, prior_normalization=m.prior_normalization)
    if m.processing_resolution is not None:
        settings["processing_resolution"] = m.processing_resolution
    if m.prior_input_size is not None:
        settings["prior_input_size"] = m.prior_input_size
    if m.init_from:
        root = Path(m.init_from).expanduser()
        index_path = root / "model_index.json"
        if not index_path.is_file():
            raise ConfigError(f"model.init_from: {root} is not a pipeline folder (no model_index.json)")
        index = json.loads(index_path.read_text())
        if index.get("_class_name") == ApDepthPipeline.__name__:
            pipe = ApDepthPipeline.from_pretrained(
                root, prior=m.prior if m.prior else None, allow_pickle=m.allow_pickle
            )
            if (pipe.prior is not None) != m.use_prior:
                raise ConfigError(
                    f"model.use_prior={m.use_prior} but {root} is a model {'with' if pipe.prior is not None else 'without'} prior"
                )
            pipe.register_to_config(**settings)
        else:
            from diffusers import AutoencoderKL, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer

            from apdepth.checkpoint import LoadOptions, load_component

            opts = LoadOptions(allow_pickle=m.allow_pickle)
            # Loaded strictly as Stable Diffusion's parts; the widening of conv_in below is the deliberate conversion.
            unet = load_component(UNet2DConditionModel, root, "unet", None, opts, "U-Net")
            if unet.config.in_channels != 4:
                raise ConfigError(
                    f"model.init_from: expected a 4-channel Stable Diffusion U-Net, found {unet.config.in_channels}"
                )
            if m.use_prior:
                widen_conv_in(unet, 8)
            vae = load_component(AutoencoderKL, root, "vae", None, opts, "VAE")
            encoder = load_component(CLIPTextModel, root, "text_encoder", None, opts, "text encoder")
            tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
            text_embedding = EmptyTextEmbedding.from_text_encoder(encoder, tokenizer)
            del encoder
            prior = None
            if m.use_prior:
                if not m.prior:
                    raise ConfigError(
                        "model.init_from is a Stable Diffusion folder: set model.prior to a Depth Anything "
                        "V2 folder (e.g. a local copy of depth-anything/Depth-Anything-V2-Small-hf)"
                    )
                prior = _load_prior(m.prior, m.allow_pickle)
            base = dict(processing_resolution=768, prior_input_size=518)
            base.update(settings)
            return ApDepthPipeline(unet=unet, vae=vae, prior=prior, text_embedding=text_embedding, **base)
    else:
        preset = get_preset(m.preset)
        pipe = build_pipeline(preset, seed=cfg.seed, use_prior=m.use_prior, **settings)
    if m.vae:
        pipe.vae = _load_vae(m.vae, m.allow_pickle)
    if m.prior and m.use_prior and not m.init_from:
        pipe.prior = _load_prior(m.prior, m.allow_pickle)
    if not m.use_prior:
        pipe.prior = None
    return pipe


class ApDepthTask(Task):
    """The U-Net of an ApDepthPipeline (VAE, prior, text embedding frozen). Losses: ``mse`` and ``freq`` on the
    latent (only cells whose f x f pixels are all valid, f = the VAE scale factor), ``pixel_l1`` on the decoded depth."""

    name = "apdepth"
    loss_names = ("mse", "freq", "pixel_l1")
    export_name = "pipeline"
    best_metric = "abs_rel"

    def build(self):
        pipe = build_apdepth_pipeline(self.cfg)
        for part in (pipe.vae, pipe.prior, pipe.text_embedding):
            _freeze(part)
        # Frozen parts run in the mixed-precision dtype (on accelerators); the trained U-Net stays fp32.
        for part in (pipe.vae, pipe.prior):
            if part is not None:
                part.to(self.device)
                if self.weight_dtype != torch.float32:
                    part.to(self.weight_dtype)
        pipe.text_embedding.to(self.device)
        pipe.unet.to(self.device)
        pipe.unet.requires_grad_(True)
        pipe.unet.train()
        if self.cfg.model.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.size_multiple = pipe.vae_scale_factor
        return LatentPredictor(pipe)

    def losses(self, model, batch, weights, noise_seed):
        pipe, lc = self.pipe, self.cfg.loss
        rgb = batch["rgb"].to(self.device)
        depth_norm = batch["depth_norm"].to(self.device)
        valid = batch["valid"].to(self.device)
        with torch.no_grad():
            # Target: the VAE encoding of the normalised depth repeated to 3 channels (B,4,h,w).
            z_gt = pipe.encode(depth_norm[:, None].expand(-1, 3, -1, -1)).float()
            prior_in = pipe.prior_condition(rgb)  # (B,H,W) exactly as inference computes it; None without prior
        pred = model(rgb, prior_in).float()  # (B,4,h,w)
        mask = L.latent_valid_mask(valid, pipe.vae_scale_factor)
        terms = {}
        if "mse" in weights:
            terms["mse"] = L.masked_mse(pred, z_gt, mask)
        if "freq" in weights:
            terms["freq"] = L.latent_frequency_loss(pred, z_gt, mask, alpha=lc.freq_alpha, norm=lc.freq_norm)
        if "pixel_l1" in weights:
            decoded = pipe.vae.decode(pred.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample.float().mean(1)
            terms["pixel_l1"] = L.masked_l1(decoded, depth_norm, valid)
        return terms

    def export(self, folder):
        pipe = self.pipe
        dtypes = {
            name: getattr(pipe, name).dtype
            for name in ("vae", "prior")
            if getattr(pipe, name) is not None and getattr(pipe, name).dtype != torch.float32
        }
        # Saved weights are fp32 whatever the training precision, so the folder loads anywhere.
        for name in dtypes:
            getattr(pipe, name).to(torch.float32)
        try:
            pipe.save_pretrained(folder, safe_serialization=True)
        finally:
            for name, dt in dtypes.items():
                getattr(pipe, name).to(dt)

    @torch.no_grad()
    def validate(self, dataset, accelerator):
        from apdepth.evaluation.evaluate import evaluate
        from apdepth.visualize import colorize_depth

        v, pipe = self.cfg.validation, self.pipe
        pipe.unet.eval()
        try:
            with accelerator.autocast():
                result = evaluate(
                    pipe,
                    dataset,
                    processing_resolution=v.processing_resolution,
                    max_samples=v.max_samples,
                    batch_size=v.batch_size,
                    progress=False,
                )
                rows = []
                for i in range(min(v.num_images, len(dataset))):
                    sample = dataset[i]
                    res = (
                        v.processing_resolution
                        if v.processing_resolution is not None
                        else getattr(dataset, "processing_resolution", 0)
                    )
                    pred = pipe(sample["rgb"], processing_resolution=res).depth[0]
                    gt, valid = sample["depth"].numpy(), sample["valid"].numpy()
                    rows.append(
                        [
                            _rgb_u8(sample["rgb"]),
                            colorize_depth(pred),
                            colorize_depth(gt, vmin=None, vmax=None, valid=valid),
                        ]
                    )
        finally:
            pipe.unet.train()
        metrics = {k: v_ for k, v_ in result["metrics"].items() if k in ("abs_rel", "delta1", "boundary_f1", "rmse")}
        image = _stack_images(rows) if rows and len({r[0].shape for r in rows}) == 1 else None
        return metrics, image


# ---------------------------------------------------------------------------------------------- vae


class VaeForward(torch.nn.Module):
    """The VAE as one module for DDP: encode, sample the posterior with ``generator``, decode."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: torch.Generator | None):
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator=generator)
        return self.vae.decode(z).sample, posterior


class VaeTask(Task):
    """An AutoencoderKL reconstructing RGB images and 3-channel normalised depth. Losses: ``l1``, ``mse``
    (masked reconstruction), ``kl`` (posterior regulariser)."""

    name = "vae"
    loss_names = ("l1", "mse", "kl")
    export_name = "vae"
    best_metric = None

    def build(self):
        from apdepth.models import build_vae, get_preset

        m = self.cfg.model
        with torch.random.fork_rng(devices=[]):  # seeded initialisation; the global random state is left alone
            torch.manual_seed(self.cfg.seed)
            self.vae = _load_vae(m.vae, m.allow_pickle) if m.vae else build_vae(get_preset(m.preset).vae)
        self.vae.to(self.device).train()
        self.size_multiple = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if m.gradient_checkpointing:
            self.vae.enable_gradient_checkpointing()
        return VaeForward(self.vae)

    def _inputs(self, batch):
        rgb = batch["rgb"].to(self.device) * 2.0 - 1.0
        depth3 = batch["depth_norm"].to(self.device)[:, None].expand(-1, 3, -1, -1)
        x = torch.cat([rgb, depth3])  # (2B,3,H,W): images and depth maps share one autoencoder
        valid = batch["valid"].to(self.device)[:, None]
        mask = torch.cat([torch.ones_like(valid), valid])  # (2B,1,H,W): RGB is valid everywhere
        return x, mask

    def losses(self, model, batch, weights, noise_seed):
        x, mask = self._inputs(batch)
        gen = torch.Generator(device=self.device).manual_seed(noise_seed)
        rec, posterior = model(x, gen)
        rec = rec.float()
        terms = {}
        if "l1" in weights:
            terms["l1"] = L.masked_l1(rec, x, mask)
        if "mse" in weights:
            terms["mse"] = L.masked_mse(rec, x, mask)
        if "kl" in weights:
            terms["kl"] = L.kl_per_element(posterior)
        return terms

    def export(self, folder):
        self.vae.save_pretrained(folder, safe_serialization=True)

    @torch.no_grad()
    def validate(self, dataset, accelerator):
        from apdepth.data.transforms import normalize_depth_quantile

        v = self.cfg.validation
        n = len(dataset) if v.max_samples is None else min(v.max_samples, len(dataset))
        self.vae.eval()
        errs_rgb, errs_depth, rows = [], [], []
        try:
            for i in range(n):
                s = dataset[i]
                h, w = s["rgb"].shape[-2:]
                hc, wc = h - h % self.size_multiple, w - w % self.size_multiple  # crop to what the VAE can encode
                dn, valid = normalize_depth_quantile(s["depth"][:hc, :wc], s["valid"][:hc, :wc])
                batch = {"rgb": s["rgb"][None, :, :hc, :wc], "depth_norm": dn[None], "valid": valid[None]}
                x, mask = self._inputs(batch)
                with accelerator.autocast():
                    rec = self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample.float()
                errs_rgb.append(L.masked_l1(rec[:1], x[:1], mask[:1]).item())
                errs_depth.append(L.masked_l1(rec[1:], x[1:], mask[1:]).item())
                if i < v.num_images:
                    rows.append(
                        [
                            _rgb_u8((x[0] + 1) / 2),
                            _rgb_u8((rec[0] + 1) / 2),
                            _rgb_u8((x[1] + 1) / 2),
                            _rgb_u8((rec[1] + 1) / 2),
                        ]
                    )
        finally:
            self.vae.train()
        metrics = {"rgb_l1": float(np.mean(errs_rgb)), "depth_l1": float(np.mean(errs_depth))}
        image = _stack_images(rows) if rows and len({r[0].shape for r in rows}) == 1 else None
        return metrics, image


# ---------------------------------------------------------------------------------------------- prior


CALIBRATION_SEEDS = range(700_000, 700_008)  # fixed renders, disjoint from the training stream and test sets


def condition_prior_for_export(prior, input_size: int, size: int = 256) -> tuple[float, float]:
    """Condition a trained prior's output range on fixed synthetic calibration renders."""
    from apdepth.data.synthetic import render_scene
    from apdepth.prior import condition_prior_output_range, prepare_prior_input

    rgb = torch.stack(
        [torch.from_numpy(render_scene(s, size, size, "mixed")["rgb"]).permute(2, 0, 1) for s in CALIBRATION_SEEDS]
    )
    device = next(prior.parameters()).device
    pixel_values = prepare_prior_input(rgb.float().div(255).to(device), "quantile", input_size)
    return condition_prior_output_range(prior, pixel_values)


class PriorTask(Task):
    """A Depth Anything prior predicting relative disparity. Losses: ``ssi`` (scale-and-shift-invariant L1),
    ``mse``."""

    name = "prior"
    loss_names = ("ssi", "mse")
    export_name = "prior"
    normalize_depth = False
    best_metric = None
    # DINOv2's mask token takes no part in a forward pass without a mask; DDP must be told.
    find_unused_parameters = True

    def build(self):
        from apdepth.models import build_prior, get_preset

        m = self.cfg.model
        preset = get_preset(m.preset) if m.preset else None
        self.input_size = m.prior_input_size or (preset.prior_input_size if preset else 518)
        if m.prior:
            self.prior = _load_prior(m.prior, m.allow_pickle)
        else:
            with torch.random.fork_rng(devices=[]):  # seeded initialisation; the global random state is left alone
                torch.manual_seed(self.cfg.seed)
                self.prior = build_prior(preset.prior)
            head = getattr(self.prior, "head", None)
            if head is not None and hasattr(head, "conv3") and head.conv3.bias is not None:
                # The head ends in a ReLU: a random init that starts negative everywhere never gets a
                # gradient (constant output, SSI loss stuck at 1). A positive bias starts it active.
                with torch.no_grad():
                    head.conv3.bias.fill_(1.0)
        self.prior.to(self.device).train()
        if m.gradient_checkpointing:
            self.prior.gradient_checkpointing_enable()
        return self.prior

    def _disparity(self, model, rgb):
        from apdepth.prior import IMAGENET_MEAN, IMAGENET_STD
        from apdepth.priors import adapter_for

        adapter = adapter_for(self.prior)  # `model` may be wrapped (DDP); the family is the prior's
        pixel_values = adapter.prepare_input(rgb.float(), "quantile", self.input_size, IMAGENET_MEAN, IMAGENET_STD)
        disp = adapter.run(model, pixel_values).float()  # (B,h',w')
        return F.interpolate(disp[:, None], size=rgb.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

    @staticmethod
    def _target(depth, valid):
        # Disparity up to scale: 1 / depth on valid pixels (the loss ignores the rest).
        return torch.where(valid, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))

    def losses(self, model, batch, weights, noise_seed):
        rgb = batch["rgb"].to(self.device)
        depth, valid = (
            batch["depth"].to(self.device),
            batch["valid"].to(self.device) & (batch["depth"].to(self.device) > 0),
        )
        pred = self._disparity(model, rgb)
        target = self._target(depth, valid)
        terms = {}
        if "ssi" in weights:
            terms["ssi"] = L.scale_shift_invariant_l1(pred, target, valid)
        if "mse" in weights:
            terms["mse"] = L.masked_mse(pred, target, valid)
        return terms

    def export(self, folder):
        # Saved with its output range conditioned (exact under quantile normalisation, see
        # condition_prior_output_range) so that it keeps its signal in bf16/fp16. A copy: the
        # model being trained is left untouched, so resuming stays exact.
        import copy

        prior = copy.deepcopy(self.prior).eval()
        condition_prior_for_export(prior, self.input_size)
        prior.save_pretrained(folder, safe_serialization=True)

    @torch.no_grad()
    def validate(self, dataset, accelerator):
        from apdepth.prior import prior_disparity_to_depth01
        from apdepth.visualize import colorize_depth

        v = self.cfg.validation
        n = len(dataset) if v.max_samples is None else min(v.max_samples, len(dataset))
        self.prior.eval()
        errs, rows = [], []
        try:
            for i in range(n):
                s = dataset[i]
                rgb = s["rgb"][None].to(self.device)
                valid = (s["valid"] & (s["depth"] > 0))[None].to(self.device)
                with accelerator.autocast():
                    pred = self._disparity(self.prior, rgb)
                errs.append(
                    L.scale_shift_invariant_l1(
                        pred, self._target(s["depth"][None].to(self.device), valid), valid
                    ).item()
                )
                if i < v.num_images:
                    rows.append(
                        [
                            _rgb_u8(s["rgb"]),
                            colorize_depth(prior_disparity_to_depth01(pred)[0].cpu().numpy()),
                            colorize_depth(s["depth"].numpy(), vmin=None, vmax=None, valid=s["valid"].numpy()),
                        ]
                    )
        finally:
            self.prior.train()
        image = _stack_images(rows) if rows and len({r[0].shape for r in rows}) == 1 else None
        return {"ssi_l1": float(np.mean(errs))}, image


TASK_CLASSES = {"apdepth": ApDepthTask, "vae": VaeTask, "prior": PriorTask}
