"""The training configuration: a typed schema (dataclasses) checked by OmegaConf.

A YAML file is merged onto the schema, then ``key=value`` overrides (dotted keys, e.g.
``optim.lr=1e-4`` or ``data.datasets.0.path=/data/hypersim``). A key the schema does not know fails at
once with a message naming it (and the closest known key), so a misspelling never silently falls back
to a default. The resolved config is saved as ``config.yaml`` in the run folder.

Stage boundaries (which losses are active until which step) are config, never code.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional

from apdepth.data.transforms import PhotometricConfig

TASKS = ("apdepth", "vae", "prior")
MIXED_PRECISION = ("no", "fp16", "bf16")
STREAM_NAME = "synthetic_stream"


@dataclass
class ModelConfig:
    """What is trained and from what it starts."""

    task: str = "apdepth"  # apdepth | vae | prior
    preset: Optional[str] = "tiny"  # tiny | small | sd2: architecture of randomly initialised parts
    # apdepth: a Stable Diffusion 2 folder (unet/ vae/ text_encoder/ tokenizer/) or an ApDepth pipeline folder
    init_from: Optional[str] = None
    # Pretrained components (pipeline folder, folder with vae/ or prior/ inside, or the component folder).
    # apdepth: used frozen. vae / prior task: the starting weights of the model being trained.
    vae: Optional[str] = None
    prior: Optional[str] = None
    use_prior: bool = True  # false = the prior-free (Marigold-style) control model
    prior_normalization: str = "quantile"
    timestep: int = 1
    channel_order: str = "prior_first"
    processing_resolution: Optional[int] = None  # stored with the weights; None = the preset's
    prior_input_size: Optional[int] = None  # None = the preset's
    gradient_checkpointing: bool = False
    allow_pickle: bool = False  # allow .bin weights in init_from / vae / prior (trusted files only)


@dataclass
class DatasetConfig:
    """One training (or validation) dataset."""

    name: str = "synthetic_stream"  # hypersim | vkitti | synthetic | ... (apdepth.data) | synthetic_stream
    path: Optional[str] = None  # tar or folder (not used by synthetic_stream)
    split_file: Optional[str] = None
    probability: float = 1.0  # relative chance that a batch is drawn from this dataset
    size: Optional[List[int]] = None  # [H, W] each sample is brought to (None = as stored)
    resize_mode: str = "crop"  # crop (random crop) | resize (bilinear; depth nearest)
    scene: str = "mixed"  # synthetic_stream only: scene type
    render_size: Optional[List[int]] = None  # synthetic_stream only: [H, W] rendered (default: size)
    num_samples: int = 16  # synthetic_stream used for validation: how many fixed scenes


@dataclass
class DataConfig:
    """The training datasets (each batch from one, drawn by ``probability``) and batch assembly."""

    datasets: List[DatasetConfig] = field(default_factory=list)
    hflip: float = 0.5  # probability of a horizontal flip per sample
    num_workers: int = 0  # DataLoader worker processes that assemble batches
    # Random camera effects on training images (exposure, white balance, blur, noise, JPEG...); off by default.
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)


@dataclass
class OptimConfig:
    """Adam, the learning-rate schedule (linear warm-up, exponential decay) and the batch sizes."""

    lr: float = 3e-5
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 100
    final_lr_ratio: float = 0.01  # exponential decay reaches lr * final_lr_ratio at decay_steps
    decay_steps: Optional[int] = None  # None = max_steps
    max_steps: Optional[int] = None  # None = the last stage's ``until``
    micro_batch: int = 2  # samples per process per forward pass
    grad_accum: int = 1  # micro-batches per optimiser step
    max_grad_norm: Optional[float] = 1.0  # None = no clipping


@dataclass
class StageConfig:
    """One stage of the schedule: the loss weights active until step ``until``."""

    until: int = 0  # this stage is active for steps [previous until, until)
    losses: Dict[str, float] = field(default_factory=dict)  # loss name -> weight


@dataclass
class LossConfig:
    """Settings of the latent frequency loss."""

    freq_alpha: float = 1.0  # W = 1 + alpha * r / r_max
    freq_norm: str = "l1"  # l1 | l2


@dataclass
class ValidationConfig:
    """What is validated how often, and how many images are logged."""

    dataset: Optional[DatasetConfig] = None
    every: int = 0  # steps between validations (0 = never)
    at_start: bool = False  # also validate before the first step (a baseline for the curve)
    max_samples: Optional[int] = None
    processing_resolution: Optional[int] = None  # None = the dataset's protocol default
    num_images: int = 4  # rgb | prediction | GT rows logged to TensorBoard
    batch_size: int = 1


@dataclass
class CheckpointConfig:
    """How often checkpoints are written and how many are kept."""

    every: int = 1000  # steps between checkpoints (0 = only at the end)
    keep_last: int = 3


@dataclass
class LoggingConfig:
    """Console and TensorBoard logging."""

    every: int = 10  # console lines every N steps (TensorBoard and train_log.jsonl get every step)
    tensorboard: bool = True


@dataclass
class TrainConfig:
    """A whole training run: what every key of the YAML config means is documented on its field."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: List[StageConfig] = field(default_factory=lambda: [StageConfig(until=1000, losses={"mse": 1.0})])
    loss: LossConfig = field(default_factory=LossConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpointing: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    mixed_precision: str = "no"  # no | fp16 | bf16
    seed: int = 0
    output_dir: str = "outputs/train"


class ConfigError(ValueError):
    """The training config is invalid; the message names the offending key."""


_SCHEMAS = (
    ModelConfig,
    DatasetConfig,
    DataConfig,
    OptimConfig,
    StageConfig,
    LossConfig,
    ValidationConfig,
    CheckpointConfig,
    LoggingConfig,
    TrainConfig,
)


def _explain(err: Exception) -> ConfigError:
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    if isinstance(err, MissingMandatoryValue):
        dotted = str(key).replace("[", ".").replace("]", "")
        return ConfigError(f"{key} must be set (it is ??? in the config): pass {dotted}=VALUE or edit the file")
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and key:
        leaf = str(key).split(".")[-1].split("[")[0]
        names = sorted({f.name for schema in _SCHEMAS for f in fields(schema)})
        close = difflib.get_close_matches(leaf, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"unknown config key {str(key)!r}{hint}")
    msg = str(err).strip().splitlines()[0]
    return ConfigError(f"invalid config value for {str(key)!r}: {msg}" if key else f"invalid config: {msg}")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Schema defaults <- YAML file <- ``key=value`` overrides; validated. Returns a :class:`TrainConfig`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(TrainConfig)
    try:
        user = OmegaConf.create({})
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            user = OmegaConf.load(path)
        # Overrides edit the plain YAML tree first (replacing whole values: `stages=[...]` or
        # `stages.1.losses={...}` keep nothing of the old entry); the schema merge below then checks every key.
        for item in overrides or []:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]  # YAML-like parsing
            try:
                OmegaConf.update(user, key, value, merge=False)
            except (OmegaConfBaseException, IndexError, TypeError, ValueError) as err:
                raise ConfigError(f"cannot apply override {item!r}: {str(err).strip().splitlines()[0]}") from err
        # Checked on the user's tree: merging ??? onto a schema default would silently keep the default.
        missing = sorted(OmegaConf.missing_keys(user))
        try:
            merged = OmegaConf.merge(schema, user)
        except TypeError as err:  # e.g. `data.datasets.0.path=...` while the file defines no datasets list
            raise ConfigError(
                f"config structure does not match the schema ({err}); "
                "give whole lists, e.g. data.datasets=[{name: hypersim, path: /data}]"
            ) from err
        if missing:
            raise ConfigError(
                "these config values must be set (they are ??? in the config): "
                + ", ".join(missing)
                + "; pass e.g. "
                + missing[0].replace("[", ".").replace("]", "")
                + "=VALUE"
            )
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _explain(err) from err
    validate(cfg)
    return cfg


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (what the run folder's config.yaml holds)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def total_steps(cfg: TrainConfig) -> int:
    """Optimiser steps of the run: ``optim.max_steps``, else the last stage's ``until``."""
    return int(cfg.optim.max_steps if cfg.optim.max_steps is not None else cfg.stages[-1].until)


def _check_dataset(d: DatasetConfig, where: str) -> None:
    if d.name != STREAM_NAME and not d.path:
        raise ConfigError(f"{where}.path is required for dataset {d.name!r} (set {where}.path=/path/to/data)")
    if d.probability < 0:
        raise ConfigError(f"{where}.probability must be >= 0")
    if d.resize_mode not in ("crop", "resize"):
        raise ConfigError(f"{where}.resize_mode must be 'crop' or 'resize', got {d.resize_mode!r}")
    for key in ("size", "render_size"):
        value = getattr(d, key)
        if value is not None:
            if len(value) != 2 or min(value) < 8:
                raise ConfigError(f"{where}.{key} must be [H, W] with both >= 8, got {list(value)}")
    if d.name == STREAM_NAME and d.size is None and d.render_size is None:
        raise ConfigError(f"{where}: synthetic_stream needs size: [H, W]")


def check_stage_losses(cfg: TrainConfig, known: tuple[str, ...]) -> None:
    """Every stage's loss names must be among the task's declared ``loss_names`` (``known``); raises ConfigError
    naming the stage, the loss and the known ones."""
    for i, s in enumerate(cfg.stages):
        for name in s.losses:
            if name not in known:
                raise ConfigError(
                    f"stages.{i}.losses: unknown loss {name!r} for task {cfg.model.task!r}; known: {list(known)}"
                )


def check_size_multiple(cfg: TrainConfig, multiple: int) -> None:
    """Every training ``size`` must be a multiple of ``multiple`` (the VAE's downsampling factor, known once the
    model is built). Raises ConfigError naming the key."""
    for i, d in enumerate(cfg.data.datasets):
        if d.size is not None and (d.size[0] % multiple or d.size[1] % multiple):
            raise ConfigError(
                f"data.datasets.{i}.size must be multiples of {multiple} (the VAE downsamples by {multiple}), got {list(d.size)}"
            )


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks with messages that name the key."""
    m = cfg.model
    if m.task not in TASKS:
        raise ConfigError(f"model.task must be one of {TASKS}, got {m.task!r}")
    if m.init_from is None and m.preset is None:
        raise ConfigError("set model.preset (tiny/small/sd2) or model.init_from (a Stable Diffusion 2 folder)")
    if m.preset is not None:
        from apdepth.models import PRESETS

        if m.preset not in PRESETS:
            raise ConfigError(f"model.preset must be one of {list(PRESETS)}, got {m.preset!r}")
    if m.prior_normalization not in ("raw", "quantile"):
        raise ConfigError(f"model.prior_normalization must be 'raw' or 'quantile', got {m.prior_normalization!r}")
    if m.channel_order not in ("prior_first", "rgb_first"):
        raise ConfigError(f"model.channel_order must be 'prior_first' or 'rgb_first', got {m.channel_order!r}")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {cfg.mixed_precision!r}")
    if not cfg.data.datasets:
        raise ConfigError("data.datasets is empty")
    for i, d in enumerate(cfg.data.datasets):
        _check_dataset(d, f"data.datasets.{i}")
    if sum(d.probability for d in cfg.data.datasets) <= 0:
        raise ConfigError("data.datasets: probabilities sum to 0")
    if not 0.0 <= cfg.data.hflip <= 1.0:
        raise ConfigError(f"data.hflip must be in [0, 1], got {cfg.data.hflip}")
    o = cfg.optim
    if o.micro_batch < 1 or o.grad_accum < 1:
        raise ConfigError("optim.micro_batch and optim.grad_accum must be >= 1")
    if o.lr <= 0 or not 0 < o.final_lr_ratio <= 1:
        raise ConfigError("optim.lr must be > 0 and optim.final_lr_ratio in (0, 1]")
    if len(o.betas) != 2:
        raise ConfigError(f"optim.betas must have two values, got {list(o.betas)}")
    if not cfg.stages:
        raise ConfigError("stages is empty: give at least one {until: N, losses: {...}}")
    prev = 0
    for i, s in enumerate(cfg.stages):
        if s.until <= prev:
            raise ConfigError(f"stages.{i}.until must be greater than the previous stage's ({prev}), got {s.until}")
        prev = s.until
        if not s.losses:
            raise ConfigError(f"stages.{i}.losses is empty")
        for name, weight in s.losses.items():
            if weight < 0:
                raise ConfigError(f"stages.{i}.losses.{name} must be >= 0")
    if total_steps(cfg) < 1:
        raise ConfigError("optim.max_steps must be >= 1")
    if cfg.loss.freq_norm not in ("l1", "l2"):
        raise ConfigError(f"loss.freq_norm must be 'l1' or 'l2', got {cfg.loss.freq_norm!r}")
    v = cfg.validation
    if v.every < 0 or cfg.checkpointing.every < 0:
        raise ConfigError("validation.every and checkpointing.every must be >= 0")
    if v.every and v.dataset is None:
        raise ConfigError("validation.every is set but validation.dataset is not")
    if v.dataset is not None:
        _check_dataset(v.dataset, "validation.dataset")
    if cfg.checkpointing.keep_last < 1:
        raise ConfigError("checkpointing.keep_last must be >= 1")
