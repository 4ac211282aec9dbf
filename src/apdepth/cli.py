"""The ``apdepth`` command line: ``predict``, ``synth``, ``train``, ``eval``, ``demo``.

Each sub-command lives next to the code it drives and exposes two functions,
``add_arguments(parser)`` and ``run(args) -> int``; this module only wires them
together, so ``apdepth --help`` lists everything in one place. It is a pure
dispatcher: nothing in the package imports it (the shared device choice, model
flags, pipeline loading and :class:`~apdepth.runtime.UsageError` live in
:mod:`apdepth.runtime`).
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


def _plain(text: str) -> str:
    """Docstring markup (``code``, :role:`target`) as plain text for --help."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or with ``only`` (a name in :data:`SUBCOMMANDS`) of that one alone:
    a run imports just the module it runs (``apdepth synth`` then starts its worker server ~0.3 s sooner)."""
    from apdepth import __version__

    parser = argparse.ArgumentParser(
        prog="apdepth",
        description="ApDepth: single-step, prior-conditioned diffusion monocular depth estimation.",
    )
    parser.add_argument("--version", action="version", version=f"apdepth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        description = _plain((module.__doc__ or help_text).strip().split("\n\n")[0])
        p = sub.add_parser(name, help=help_text, description=description)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from apdepth.runtime import UsageError

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
