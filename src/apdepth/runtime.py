"""The command layer shared by ``predict``, ``demo``, ``eval`` and the benchmarks: device and precision
choice, the model flags, and :func:`load_pipeline`, which turns plain values into a ready pipeline.

Library code never picks a device; the commands do, through here. Nothing in this module imports the
command-line dispatcher (:mod:`apdepth.cli`), which only wires the sub-commands together.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

DTYPES = ("fp32", "fp16", "bf16")


class UsageError(ValueError):
    """A command-line value that cannot work; :func:`apdepth.cli.main` prints ``error: <message>`` and exits
    with 2. A ValueError, so library callers can catch it as one."""


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(name: str = "auto"):
    """Resolve a device name to a ``torch.device``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``.

    Raises :class:`UsageError` for any other string (``0``, ``gpu``...) and for a device that is not there."""
    import re

    name = str(name).strip().lower()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        hint = ""
        if name.isdigit():
            hint = f" (for GPU {name}: cuda:{name})"
        elif name in ("gpu", "nvidia"):
            hint = " (for a GPU: cuda)"
        raise UsageError(f"unknown --device {name!r}: use {DEVICE_CHOICES}{hint}")
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was requested but no CUDA device is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name} was requested but there are only {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was requested but MPS is not available")
    return dev


def pick_dtype(name: str):
    """``fp32``/``fp16``/``bf16`` -> the ``torch.dtype``; :class:`UsageError` for anything else."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise UsageError(f"unknown dtype {name!r}; choose one of {', '.join(table)}")
    return table[name]


def add_model_arguments(p: argparse.ArgumentParser, default_dtype: str = "fp32") -> None:
    """The model flags every inference command shares: ``--checkpoint --prior --variant --revision --device
    --dtype --allow-pickle`` (values for :func:`load_pipeline`, see :func:`model_options`)."""
    p.add_argument(
        "--checkpoint", default=None, help="pipeline folder or Hugging Face Hub id (default: the bundled small model)"
    )
    p.add_argument(
        "--prior",
        default=None,
        help="depth prior (Hub id or folder): needed for checkpoints that do not include one, replaces the included one "
        "otherwise; e.g. depth-anything/Depth-Anything-V2-Small-hf (Apache-2.0; the Base/Large/Giant priors are non-commercial)",
    )
    p.add_argument(
        "--variant", default=None, help="weight file variant to load, e.g. fp16 (default: the full-precision files)"
    )
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of --checkpoint (default: main)")
    p.add_argument(
        "--dtype", default=default_dtype, choices=list(DTYPES), help=f"compute precision (default {default_dtype})"
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto: cuda, then mps, then cpu)")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading pickled (.bin) weights; only for checkpoints you trust",
    )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The values of :func:`add_model_arguments`' flags as keyword arguments of :func:`load_pipeline`."""
    return {
        "checkpoint": args.checkpoint,
        "prior": args.prior,
        "variant": getattr(args, "variant", None),
        "revision": getattr(args, "revision", None),
        "device": args.device,
        "dtype": args.dtype,
        "allow_pickle": bool(getattr(args, "allow_pickle", False)),
    }


def quiet_loading() -> None:
    """No weight-loading progress bars from transformers/diffusers."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def configure_fast_path(
    pipe,
    device,
    compile: bool = False,
    vae_tiling: bool = False,
    compile_mode: str = "default",
    cuda_graphs: bool = False,
    channels_last: bool | None = None,
    exact_speedups: bool = True,
    cudnn_benchmark: bool = False,
) -> None:
    """The commands' speed choices. ``channels_last=None`` picks it where it pays: on a CPU it makes oneDNN's
    convolutions several times faster; on GPUs only together with torch.compile. ``exact_speedups``: the
    pipeline's :meth:`~ApDepthPipeline.enable_exact_speedups` (same depth, less work). ``cudnn_benchmark``: let
    cuDNN time its convolution algorithms per input shape (a process-wide switch; pays off for many images of
    one size, costs a tuning pass for every new shape)."""
    if channels_last is None:
        channels_last = device.type == "cpu" or compile
    if channels_last:
        pipe.enable_channels_last()
    if exact_speedups:
        pipe.enable_exact_speedups()
    if cudnn_benchmark and device.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True
    if vae_tiling:
        pipe.enable_vae_tiling()
    if compile:
        pipe.enable_compile(mode=compile_mode, cuda_graphs=cuda_graphs, cache_dir=default_compile_cache())


def default_compile_cache() -> str:
    """Where the commands keep compiled graphs: ``TORCHINDUCTOR_CACHE_DIR`` as the user set it before torch ran,
    else ``~/.cache/apdepth/inductor`` (persistent, unlike torch's default in the temporary folder)."""
    from apdepth import _USER_INDUCTOR_CACHE

    return _USER_INDUCTOR_CACHE or os.path.expanduser("~/.cache/apdepth/inductor")


def load_pipeline(
    checkpoint: str | os.PathLike | None = None,
    *,
    prior: str | None = None,
    device: Any = "auto",
    dtype: Any = "fp32",
    allow_pickle: bool = False,
    variant: str | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    fast_path: bool = True,
    compile: bool = False,
    compile_mode: str = "default",
    cuda_graphs: bool = False,
    vae_tiling: bool = False,
    cpu_offload: bool = False,
    quiet: bool = False,
):
    """Load a pipeline the way the commands do and make it ready to run.

    Args:
        checkpoint: pipeline folder or Hub id; ``None`` = the bundled model.
        prior: depth prior for checkpoints without one (Hub id or folder).
        device: a name for :func:`pick_device` or a ``torch.device``.
        dtype: ``fp32``/``fp16``/``bf16`` or a ``torch.dtype``.
        allow_pickle, variant, revision, local_files_only: as in :meth:`ApDepthPipeline.from_pretrained`.
        fast_path: channels_last on a CPU (see :func:`configure_fast_path`); ``compile``, ``compile_mode``,
            ``cuda_graphs`` and ``vae_tiling`` as there.
        cpu_offload: keep weights on the CPU and move each model to ``device`` while it runs
            (``enable_model_cpu_offload``; for accelerators with little memory).
        quiet: no weight-loading progress bars.
    Returns:
        The pipeline on ``device`` (or offloaded), its progress bar off.
    Raises:
        CheckpointNotFoundError (an OSError): the checkpoint or prior cannot be found or read.
        ValueError: a bad device/dtype name, mismatched weights, or options that do not fit the device.
    """
    import torch

    dev = pick_device(device) if isinstance(device, str) else torch.device(device)
    torch_dtype = pick_dtype(dtype) if isinstance(dtype, str) else dtype
    if cuda_graphs and not compile:
        raise ValueError("CUDA graphs need compile")
    if cuda_graphs and dev.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device (running on {dev})")
    if cpu_offload and dev.type == "cpu":
        raise ValueError("CPU offload needs an accelerator device (cuda or mps) to offload to")
    if quiet:
        quiet_loading()
    from apdepth.pipeline import ApDepthPipeline

    pipe = ApDepthPipeline.from_pretrained(
        checkpoint,
        prior=prior,
        torch_dtype=torch_dtype,
        allow_pickle=allow_pickle,
        variant=variant,
        revision=revision,
        local_files_only=local_files_only,
    )
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    configure_fast_path(
        pipe,
        dev,
        compile=compile,
        vae_tiling=vae_tiling,
        compile_mode=compile_mode,
        cuda_graphs=cuda_graphs,
        channels_last=None if fast_path else False,
        exact_speedups=fast_path,
    )
    return pipe
