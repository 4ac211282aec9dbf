"""The ``apdepth`` command line: ``predict``, ``synth``, ``train``, ``eval``, ``demo``.

Each sub-command lives next to the code it drives and exposes two functions,
``add_arguments(parser)`` and ``run(args) -> int``; this module only wires them
together, so ``apdepth --help`` lists everything in one place. The device is
chosen here (``pick_device``) and nowhere in library code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("apdepth.predict", "write depth maps for images, folders or globs"),
    "synth": ("apdepth.data.synthetic_cli", "render a procedural RGB-D dataset"),
    "train": ("apdepth.training.cli", "train a model from a YAML config"),
    "eval": ("apdepth.evaluation.cli", "evaluate on NYUv2/KITTI/ETH3D/ScanNet/DIODE/synthetic"),
    "demo": ("apdepth.demo", "start the web demo on localhost"),
}


def pick_device(name: str = "auto"):
    """Resolve ``auto|cpu|cuda|mps`` (or ``cuda:N``) to a ``torch.device``; auto prefers cuda, then mps."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was requested but no CUDA device is available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("error: --device mps was requested but MPS is not available")
    return dev


def pick_dtype(name: str):
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise SystemExit(f"error: unknown dtype {name!r}; choose one of {', '.join(table)}")
    return table[name]


def build_parser() -> argparse.ArgumentParser:
    from apdepth import __version__

    parser = argparse.ArgumentParser(
        prog="apdepth",
        description="ApDepth: single-step, prior-conditioned diffusion monocular depth estimation.",
    )
    parser.add_argument("--version", action="version", version=f"apdepth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().split("\n\n")[0])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
