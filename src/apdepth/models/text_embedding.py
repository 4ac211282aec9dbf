"""The empty-prompt text embedding, stored as a pipeline component.

ApDepth conditions its U-Net on the CLIP embedding of the empty prompt: a constant. Keeping the
whole text encoder in memory for one constant tensor wastes ~1.3 GB at paper size, so the
pipeline keeps only this tensor, saved and loaded like any other component (and moved by ``.to()``).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class EmptyTextEmbedding(ModelMixin, ConfigMixin):
    """Holds a (1, seq_len, dim) embedding; ``forward(batch_size)`` returns it repeated over the batch."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, seq_len: int = 77, dim: int = 1024):
        super().__init__()
        # A parameter (frozen) rather than a buffer: diffusers' loaders handle parameters uniformly.
        self.embedding = torch.nn.Parameter(torch.zeros(1, seq_len, dim), requires_grad=False)

    @classmethod
    def from_tensor(cls, embedding: torch.Tensor) -> "EmptyTextEmbedding":
        """Wrap a (1, seq_len, dim) or (seq_len, dim) tensor; ValueError for other shapes."""
        if embedding.ndim == 2:
            embedding = embedding[None]
        if embedding.ndim != 3 or embedding.shape[0] != 1:
            raise ValueError(f"expected a (1, seq_len, dim) embedding, got shape {tuple(embedding.shape)}")
        module = cls(seq_len=embedding.shape[1], dim=embedding.shape[2])
        with torch.no_grad():
            module.embedding.copy_(embedding.detach().float())
        return module

    @classmethod
    def from_text_encoder(cls, text_encoder, tokenizer, prompt: str = "") -> "EmptyTextEmbedding":
        """Encode ``prompt`` (default: empty) once with a CLIP text encoder and keep only the result."""
        tokens = tokenizer(
            prompt,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = next(text_encoder.parameters()).device
        with torch.no_grad():
            emb = text_encoder(tokens.input_ids.to(device))[0]
        return cls.from_tensor(emb.float().cpu())

    def forward(self, batch_size: int = 1) -> torch.Tensor:
        """The embedding repeated over the batch: (batch_size, seq_len, dim)."""
        return self.embedding.expand(batch_size, -1, -1)
