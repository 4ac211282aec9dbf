"""Train a model (ApDepth U-Net, VAE or depth prior) from a YAML config.

Usage: ``apdepth train --config FILE [key=value ...] [--output DIR] [--resume DIR|latest]``.
Multi-GPU / multi-node: ``accelerate launch [--multi_gpu --num_processes N ...] -m apdepth train ...``.
Overrides use dotted keys, e.g. ``optim.max_steps=100 data.datasets.0.path=/data/hypersim``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=None,
        help="YAML training config (default with --resume: the run folder's config.yaml)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides with dotted keys, e.g. optim.lr=1e-4"
    )
    p.add_argument("--output", "-o", default=None, help="run folder (overrides output_dir)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="DIR|latest",
        help="continue from a checkpoint folder, a run folder, or 'latest' in the run folder",
    )


# Modules of the ``train`` extra; without them training cannot start (checked before anything else runs).
TRAIN_MODULES = {"omegaconf": "omegaconf", "yaml": "pyyaml", "tensorboard": "tensorboard"}


def missing_train_modules() -> list[str]:
    """Distribution names of the ``train`` extra that cannot be imported."""
    import importlib

    missing = []
    for module, dist in TRAIN_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    return missing


def run(args: argparse.Namespace) -> int:
    missing = missing_train_modules()
    if missing:
        print(
            f"error: training needs the train extra: pip install 'apdepth[train]' (missing: {', '.join(missing)})",
            file=sys.stderr,
        )
        return 2
    from apdepth.training.config import ConfigError, load_config

    overrides = list(args.overrides or [])
    if args.output:
        overrides.append(f"output_dir={args.output}")
    config = args.config
    try:
        if config is None:
            if not args.resume:
                raise ConfigError("--config is required (or --resume with a run folder that holds config.yaml)")
            candidates = [
                Path(args.output or "") / "config.yaml",
                Path(args.resume) / "config.yaml",
                Path(args.resume).parent.parent / "config.yaml",
            ]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise ConfigError(f"--resume {args.resume}: no config.yaml found next to it; pass --config")
            config = found[0]
            if not args.output and found[0] != candidates[0]:
                overrides.append(f"output_dir={found[0].parent}")
        cfg = load_config(config, overrides)
        from apdepth.training.trainer import train

        train(cfg, resume=args.resume)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
