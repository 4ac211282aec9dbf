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


class UsageError(Exception):
    """A command-line value that cannot work; :func:`main` prints ``error: <message>`` and exits with 2."""


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(name: str = "auto"):
    """Resolve ``auto|cpu|cuda|mps`` (or ``cuda:N``) to a ``torch.device``; auto prefers cuda, then mps.

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
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise UsageError(f"unknown dtype {name!r}; choose one of {', '.join(table)}")
    return table[name]


def _plain(text: str) -> str:
    """Docstring markup (``code``, :role:`target`) as plain text for --help."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


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
        description = _plain((module.__doc__ or help_text).strip().split("\n\n")[0])
        p = sub.add_parser(name, help=help_text, description=description)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if getattr(err, "filename", None) is None or err.errno is None:
            raise
        # A file-system failure the command did not foresee (a disk filling up, permissions changing under it):
        # one line naming the file, not a traceback.
        print(f"error: {err.strerror}: {err.filename}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
