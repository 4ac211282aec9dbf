"""Shared fixtures: tiny random models (built in seconds on a CPU) and small image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_pipeline():
    from apdepth.models import build_tiny_pipeline

    return build_tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_pipeline) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny_pipeline.save_pretrained(path)
    return path


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish random RGB image (uint8, H×W×3)."""
    rng = np.random.default_rng(seed)
    base = rng.random((max(2, h // 8), max(2, w // 8), 3))
    from PIL import Image

    im = Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    return np.asarray(im)


def free_port() -> int:
    """An unused local TCP port for a multi-process launcher."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_cpu_launch(num_processes: int = 2) -> list[str]:
    """``python -m accelerate.commands.launch`` for ``num_processes`` CPU processes (gloo) on a free port;
    the caller sets ``ACCELERATE_USE_CPU=1`` and appends ``-m MODULE ...``."""
    import sys

    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]


def write_tiny_clip(root: Path, hidden: int = 16, max_len: int = 8) -> None:
    """A tiny CLIP text encoder + tokenizer in diffusers' folder layout (text_encoder/, tokenizer/)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok_dir = root / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=max_len)
    tokenizer.save_pretrained(tok_dir)
    cfg = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=max_len,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    CLIPTextModel(cfg).save_pretrained(root / "text_encoder")
