"""Resolving checkpoints: local folders, Hugging Face Hub ids, and one clear error when that fails."""

from __future__ import annotations

import os
from pathlib import Path


class CheckpointNotFoundError(OSError):
    """A checkpoint or prior could not be found locally or fetched; the message says how to supply it."""


def friendly_load_error(name: str, what: str, err: BaseException, allow_pickle: bool = False) -> CheckpointNotFoundError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    hint_pickle = ""
    if not allow_pickle and ("safetensors" in text.lower() or ".bin" in text or "pickle" in text.lower()):
        hint_pickle = (
            " Only safetensors weights are loaded by default; if you trust this checkpoint and it has only "
            "pickled (.bin/.pt) weights, pass allow_pickle=True (CLI: --allow-pickle)."
        )
    return CheckpointNotFoundError(
        f"Could not load the {what} {name!r}: it is not a complete local folder and could not be fetched from the "
        f"Hugging Face Hub ({text}). If you are offline, download it on a connected machine with "
        f"`huggingface-cli download {name} --local-dir DIR` (or copy the folder) and pass that folder instead."
        + hint_pickle
    )


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    allow_pickle: bool = False,
    local_files_only: bool | None = None,
    revision: str | None = None,
) -> Path:
    """A local folder is returned as is; a hub id is downloaded (weights filtered to safetensors unless
    ``allow_pickle``) into the Hugging Face cache and its local path returned."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointNotFoundError(
                f"{path} is a folder but has no model_index.json: expected a pipeline folder written by "
                f"ApDepthPipeline.save_pretrained or the diffusers layout (model_index.json, unet/, vae/, ...)."
            )
        return path
    if path.exists():
        raise CheckpointNotFoundError(f"{path} is a file; a checkpoint is a folder (or a Hugging Face Hub id)")
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointNotFoundError(
            f"Checkpoint {name!r} is neither an existing folder nor a Hugging Face Hub id of the form 'owner/name'."
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors", "tokenizer/*"]
    if allow_pickle:
        patterns += ["*.bin", "*.pt", "*.pth"]
    try:
        return Path(
            snapshot_download(name, allow_patterns=patterns, local_files_only=bool(local_files_only), revision=revision)
        )
    except Exception as err:  # huggingface_hub raises many types for offline/missing/auth cases
        raise friendly_load_error(name, "checkpoint", err, allow_pickle) from err
