"""Reading pipeline folders into components, strictly: ApDepth's own layout and the published layout.

Two layouts load (both resolved to a local folder first, see :func:`apdepth.hub.resolve_checkpoint`):

native
    What :meth:`ApDepthPipeline.save_pretrained` writes: ``model_index.json`` naming ``ApDepthPipeline``,
    with ``unet/ vae/ text_embedding/`` and, for models with a prior, ``prior/``.
published
    The diffusers layout the ApDepth V1 weights ship in (``model_index.json`` naming e.g.
    ``MarigoldDepthPipeline``, with ``unet/ vae/ text_encoder/ tokenizer/``). It is *converted* on load:
    the text encoder encodes the empty prompt once and only that embedding is kept; the prior is not part
    of the folder and must be given.

Every weight file is checked against its module: a missing, unexpected or wrongly shaped weight raises
:class:`CheckpointMismatchError` naming the keys, because a silently re-initialised weight gives garbage
depth with no error. ``strict=False`` is the explicit opt-out for deliberate conversions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apdepth.hub import CheckpointNotFoundError, friendly_load_error, local_load_error, no_loading_bars, resolve_prior


class CheckpointMismatchError(ValueError):
    """The weights on disk do not match the module they are loaded into (missing, unexpected or
    wrongly shaped keys). The message names the component, the folder and the keys."""


@dataclass(frozen=True)
class LoadOptions:
    """How weights are read; passed to every component (diffusers' ``from_pretrained`` arguments).

    Attributes:
        allow_pickle: allow pickled (``.bin``/``.pt``) weights; only for checkpoints you trust.
        variant: weight file variant such as ``"fp16"`` (``diffusion_pytorch_model.fp16.safetensors``); a
            component without that variant loads its default weights, as in diffusers.
        revision: Hub branch, tag or commit of the checkpoint (a prior given by its own Hub id uses its default).
        use_safetensors: ``None`` (default): safetensors only unless ``allow_pickle``; ``True``: safetensors
            only; ``False``: prefer pickled weights (needs ``allow_pickle``).
        cache_dir: Hugging Face cache folder for Hub downloads.
        token: Hub access token (or ``True`` for the stored login) for private or gated repositories.
        local_files_only: never download; only use local folders and the cache.
        strict: raise :class:`CheckpointMismatchError` when a weight is missing, unexpected or mis-shaped.
    """

    allow_pickle: bool = False
    variant: str | None = None
    revision: str | None = None
    use_safetensors: bool | None = None
    cache_dir: str | None = None
    token: str | bool | None = None
    local_files_only: bool | None = None
    strict: bool = True

    def __post_init__(self):
        if self.use_safetensors is False and not self.allow_pickle:
            raise ValueError(
                "use_safetensors=False reads pickled weights: pass allow_pickle=True as well "
                "(only for checkpoints you trust)"
            )

    @property
    def safetensors_flag(self) -> bool | None:
        """The ``use_safetensors`` value handed to diffusers/transformers."""
        return True if not self.allow_pickle else self.use_safetensors

    def hub_kwargs(self) -> dict:
        """Download arguments for a Hub id (only those that are set)."""
        kw = {"revision": self.revision, "cache_dir": self.cache_dir, "token": self.token}
        if self.local_files_only is not None:
            kw["local_files_only"] = self.local_files_only
        return {k: v for k, v in kw.items() if v is not None}


def check_loading_info(info: dict, what: str, strict: bool = True) -> None:
    """Raise :class:`CheckpointMismatchError` for the missing/unexpected/mismatched keys in a
    ``from_pretrained(..., output_loading_info=True)`` report (diffusers or transformers) when ``strict``."""
    if not strict:
        return
    problems = []
    for key, label in (
        ("missing_keys", "missing"),
        ("unexpected_keys", "unexpected"),
        ("mismatched_keys", "wrong shape"),
    ):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in (info.get(key) or ()))
        if keys:
            shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {label} ({shown})")
    if problems:
        raise CheckpointMismatchError(
            f"{what}: the weights do not match the model: {'; '.join(problems)}. A renamed or missing weight would "
            "otherwise be initialised at random. If this is a deliberate conversion, load with strict=False."
        )


def _has_variant(folder: Path, variant: str) -> bool:
    return folder.is_dir() and any(f".{variant}." in p.name for p in folder.iterdir())


def load_component(klass, root: Path, sub: str | None, torch_dtype, opts: LoadOptions, what: str | None = None):
    """Load one diffusers component (or a transformers model) from ``root/sub`` (``sub=None``: ``root`` itself)
    with ``opts``. Raises :class:`CheckpointNotFoundError` if it cannot be read and
    :class:`CheckpointMismatchError` if its weights do not match (when ``opts.strict``)."""
    from diffusers import ModelMixin

    folder = Path(root) / sub if sub else Path(root)
    what = what or sub or folder.name
    kwargs = {"use_safetensors": opts.safetensors_flag, "output_loading_info": True}
    if sub:
        kwargs["subfolder"] = sub
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    if opts.variant and _has_variant(folder, opts.variant):
        kwargs["variant"] = opts.variant
    if not opts.strict and issubclass(klass, ModelMixin):
        kwargs["low_cpu_mem_usage"] = False  # otherwise diffusers leaves a missing weight on the meta device
    try:
        with no_loading_bars():
            model, info = klass.from_pretrained(root, **kwargs)
    except (OSError, ValueError) as err:
        raise friendly_load_error(str(folder), what, err, opts.allow_pickle) from err
    check_loading_info(info, f"{what} ({folder})", opts.strict)
    return model


def load_prior(prior, torch_dtype=None, opts: LoadOptions | None = None, own_folder: bool = False):
    """A depth prior from a module (returned as is), a local folder or a Hub id; ``None`` gives ``None``. Its class
    (``architectures`` in its ``config.json``; Depth Anything if absent) picks the family in :mod:`apdepth.priors`.

    Weights load in ``torch_dtype`` (default fp32, as diffusers loads the other components). ``opts``' cache
    folder, token and offline flag apply to a Hub id (its ``revision`` and ``variant`` belong to the checkpoint,
    not to a prior named separately); ``variant`` applies to the ``prior/`` folder of a pipeline (``own_folder``).
    Raises :class:`CheckpointNotFoundError` or :class:`CheckpointMismatchError` (when ``opts.strict``).
    """
    import torch

    if prior is None or isinstance(prior, torch.nn.Module):
        return prior
    from apdepth.priors import DEFAULT_PRIOR_CLASS, get_prior_adapter, recorded_class

    opts = opts or LoadOptions()
    # A Hub id is fetched (or found in the cache) first, failing fast offline; then it loads as a local folder.
    folder = resolve_prior(str(prior), opts.allow_pickle, opts.local_files_only, opts.cache_dir, opts.token)
    # The class recorded with the weights picks the prior family (apdepth.priors).
    model_class = get_prior_adapter(recorded_class(folder) or DEFAULT_PRIOR_CLASS).model_class()
    kwargs = {
        "use_safetensors": opts.safetensors_flag,
        "output_loading_info": True,
        "local_files_only": True,
        "dtype": torch_dtype or torch.float32,
    }
    if own_folder and opts.variant and _has_variant(folder, opts.variant):
        kwargs["variant"] = opts.variant
    try:
        with no_loading_bars():
            model, info = model_class.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as err:
        raise local_load_error(folder, "depth prior", err, opts.allow_pickle) from err
    check_loading_info(info, f"depth prior ({prior})", opts.strict)
    return model


def load_native(cls, root: Path, index: dict, prior, torch_dtype, opts: LoadOptions):
    """A folder written by ``save_pretrained``: every component from its sub-folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from apdepth.models.text_embedding import EmptyTextEmbedding

    unet = load_component(UNet2DConditionModel, root, "unet", torch_dtype, opts, "U-Net")
    vae = load_component(AutoencoderKL, root, "vae", torch_dtype, opts, "VAE")
    text_embedding = load_component(EmptyTextEmbedding, root, "text_embedding", torch_dtype, opts, "text embedding")
    own_prior = prior is None and index.get("prior", [None, None])[0] is not None
    if own_prior:
        prior = root / "prior"
    prior = load_prior(str(prior) if isinstance(prior, Path) else prior, torch_dtype, opts=opts, own_folder=own_prior)
    config = {k: index[k] for k in cls._config_keys() if k in index}
    return cls(unet=unet, vae=vae, prior=prior, text_embedding=text_embedding, **config)


def load_published(cls, root: Path, index: dict, prior, torch_dtype, opts: LoadOptions):
    """Convert the published diffusers layout (``unet/ vae/ text_encoder/ tokenizer/``, no prior inside)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from apdepth.models.text_embedding import EmptyTextEmbedding

    missing = [sub for sub in ("unet", "vae") if not (root / sub).is_dir()]
    if missing:
        raise CheckpointNotFoundError(f"{root}: not a pipeline folder: missing sub-folder(s) {', '.join(missing)}")
    unet = load_component(UNet2DConditionModel, root, "unet", torch_dtype, opts, "U-Net")
    vae = load_component(AutoencoderKL, root, "vae", torch_dtype, opts, "VAE")
    if (root / "text_embedding").is_dir():
        text_embedding = load_component(EmptyTextEmbedding, root, "text_embedding", torch_dtype, opts, "text embedding")
    elif (root / "text_encoder").is_dir() and (root / "tokenizer").is_dir():
        from transformers import CLIPTextModel, CLIPTokenizer

        encoder = load_component(CLIPTextModel, root, "text_encoder", None, opts, "text encoder")
        try:
            with no_loading_bars():
                tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
        except (OSError, ValueError) as err:
            raise friendly_load_error(str(root / "tokenizer"), "tokenizer", err, opts.allow_pickle) from err
        # Encode the empty prompt once; the encoder itself is dropped right after.
        text_embedding = EmptyTextEmbedding.from_text_encoder(encoder, tokenizer)
        del encoder
    else:
        raise CheckpointNotFoundError(
            f"{root}: no text_embedding/ and no text_encoder/ + tokenizer/ to compute the empty-prompt embedding from"
        )
    if torch_dtype is not None:
        text_embedding.to(torch_dtype)
    with_prior = unet.config.in_channels == 2 * vae.config.latent_channels
    if with_prior and prior is None:
        raise CheckpointNotFoundError(
            f"{root} ({index.get('_class_name', 'unknown pipeline')}) does not include its depth prior. Pass one, e.g. "
            "prior='depth-anything/Depth-Anything-V2-Small-hf' (CLI: --prior ...), or a local folder holding it. "
            "Depth Anything V2 Small is Apache-2.0; the Base/Large/Giant priors are non-commercial (CC-BY-NC-4.0)."
        )
    prior = load_prior(prior, torch_dtype, opts=opts) if with_prior else None
    config = dict(prior_normalization="raw", timestep=1, channel_order="prior_first")
    if index.get("default_processing_resolution"):
        config["processing_resolution"] = int(index["default_processing_resolution"])
    return cls(unet=unet, vae=vae, prior=prior, text_embedding=text_embedding, **config)
