"""Resolving checkpoints: local folders, Hugging Face Hub ids, and one clear error when that fails.

Which strings are local paths and which are Hub ids (the rule every command and ``from_pretrained`` use):

* an existing file or folder is always local;
* a string that starts with ``.``, ``/`` or ``~``, contains a backslash or a drive letter (``C:``), has more
  than one ``/``, or whose first part names an existing local folder (``models/foo`` when ``models/``
  exists) is a local path; if it does not exist the error says "no such folder", with no Hub involved;
* anything else of the form ``owner/name`` is a Hub id.

Hub downloads fail fast when offline: with ``HF_HUB_OFFLINE=1`` only the local cache is used, and
otherwise a short connection check (a few seconds) runs before any download, so an unreachable Hub is
reported at once instead of after a series of retries. A corrupt or truncated local weights file is
reported as such, naming the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse


class CheckpointNotFoundError(OSError):
    """A checkpoint or prior could not be found locally or fetched; the message says how to supply it."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_CONNECT_TIMEOUT_S = 3.0


def looks_like_path(name: str) -> bool:
    """True when ``name`` is meant as a local path (see the module docstring), whether or not it exists."""
    if name.startswith((".", "/", "~")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
        return True
    if name.count("/") != 1 or not _HUB_ID.match(name):
        return True
    return Path(name.split("/", 1)[0]).is_dir()


@contextlib.contextmanager
def no_loading_bars():
    """Hide transformers' and diffusers' per-file "Loading weights" bars while weights are read from disk
    (a bar on every start says nothing); the previous settings, download bars included, are restored."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    d_on, t_on = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    hub_off = hub_utils.are_progress_bars_disabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            diffusers_logging.enable_progress_bar()
        if t_on:
            transformers_logging.enable_progress_bar()
        if hub_off:
            hub_utils.disable_progress_bars()
        else:
            hub_utils.enable_progress_bars()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _corrupt_weights(folder: Path) -> tuple[Path, str] | None:
    """The first safetensors file under ``folder`` that cannot be opened, and why; None if all open."""
    from safetensors import safe_open

    for path in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as err:  # safetensors raises its own error types for bad headers and short files
            return path, _first_line(err)
    return None


def local_load_error(
    path: str | os.PathLike, what: str, err: BaseException, allow_pickle: bool = False
) -> CheckpointNotFoundError:
    """The error for a local folder that exists but does not load: corrupt weights, pickled-only weights,
    or what the loader said, without any Hub or download hint (nothing was to be downloaded)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    corrupt = _corrupt_weights(folder)
    if corrupt is not None:
        file, why = corrupt
        return CheckpointNotFoundError(
            f"Could not load the {what} from {path}: the weights file {file} is corrupt or truncated ({why}); "
            "copy or download it again."
        )
    has_safetensors = any(folder.rglob("*.safetensors"))
    has_pickle = any(p.suffix in (".bin", ".pt", ".pth") for p in folder.rglob("*"))
    if has_pickle and not has_safetensors and not allow_pickle:
        return CheckpointNotFoundError(
            f"Could not load the {what} from {path}: it has only pickled (.bin/.pt) weights, and only safetensors "
            "are loaded by default; if you trust this checkpoint, pass allow_pickle=True (CLI: --allow-pickle)."
        )
    return CheckpointNotFoundError(f"Could not load the {what} from {path}: {_first_line(err)}")


def friendly_load_error(
    name: str, what: str, err: BaseException, allow_pickle: bool = False
) -> CheckpointNotFoundError:
    """One clear error for a failed load of ``name`` (a local folder or a Hub id)."""
    if Path(name).expanduser().exists():
        return local_load_error(Path(name).expanduser(), what, err, allow_pickle)
    return hub_error(name, what, _first_line(err))


def hub_error(name: str, what: str, reason: str) -> CheckpointNotFoundError:
    """The error for a Hub id that could not be fetched, with the offline download hint."""
    return CheckpointNotFoundError(
        f"Could not load the {what} {name!r} from the Hugging Face Hub ({reason}). If you are offline, download "
        f"it on a connected machine with `hf download {name} --local-dir DIR` (or copy the folder) and pass DIR "
        f"instead. (A local folder named {name} does not exist here.)"
    )


def _hub_offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable() -> str | None:
    """None when the Hub endpoint (``HF_ENDPOINT``, default huggingface.co) accepts a TCP connection within a
    few seconds; otherwise the reason. Much faster than letting a download fail after its retries."""
    from huggingface_hub import constants

    url = urlparse(getattr(constants, "ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return None
    except OSError as err:
        return f"cannot reach {host}: {err.strerror or err}"


def hub_snapshot(
    name: str,
    what: str,
    patterns: list[str],
    local_files_only: bool | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """Download (or find in the local cache) the Hub repository ``name`` and return its local folder
    (``revision``, ``cache_dir`` and ``token`` as in ``huggingface_hub.snapshot_download``).

    With ``local_files_only`` or ``HF_HUB_OFFLINE=1`` only the cache is used; otherwise an unreachable Hub
    falls back to the cache at once, and the error (if it is not cached either) comes in seconds."""
    from huggingface_hub import snapshot_download

    offline_reason = None
    if local_files_only or _hub_offline_env():
        offline_reason = "offline mode (HF_HUB_OFFLINE or local_files_only): only the local cache is used"
    else:
        unreachable = hub_unreachable()
        if unreachable:
            offline_reason = f"{unreachable}; not in the local cache either"
    try:
        return Path(
            snapshot_download(
                name,
                allow_patterns=patterns,
                local_files_only=offline_reason is not None,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
            )
        )
    except Exception as err:  # huggingface_hub raises many types for offline/missing/auth cases
        raise hub_error(name, what, offline_reason or _first_line(err)) from err


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    allow_pickle: bool = False,
    local_files_only: bool | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """A local folder is returned as is; a hub id is downloaded (weights filtered to safetensors unless
    ``allow_pickle``; ``revision``, ``cache_dir``, ``token`` as in ``snapshot_download``) into the Hugging Face
    cache and its local path returned. Raises :class:`CheckpointNotFoundError`."""
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
    if looks_like_path(name):
        raise CheckpointNotFoundError(
            f"Checkpoint {name!r}: no such folder (it reads as a local path, so it is not looked up as a "
            "Hugging Face Hub id of the form 'owner/name')."
        )
    return hub_snapshot(name, "checkpoint", _patterns(allow_pickle), local_files_only, revision, cache_dir, token)


def resolve_prior(
    name_or_path: str,
    allow_pickle: bool = False,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """Like :func:`resolve_checkpoint` for a depth prior (a transformers folder with ``config.json``)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointNotFoundError(f"{path} is a file; a depth prior is a folder (or a Hugging Face Hub id)")
    if looks_like_path(str(name_or_path)):
        raise CheckpointNotFoundError(
            f"Depth prior {str(name_or_path)!r}: no such folder (it reads as a local path, so it is not looked up "
            "as a Hugging Face Hub id of the form 'owner/name')."
        )
    return hub_snapshot(
        str(name_or_path), "depth prior", _patterns(allow_pickle), local_files_only, cache_dir=cache_dir, token=token
    )


def _patterns(allow_pickle: bool) -> list[str]:
    patterns = ["*.json", "*.txt", "*.safetensors", "tokenizer/*"]
    if allow_pickle:
        patterns += ["*.bin", "*.pt", "*.pth"]
    return patterns
