"""PRMU: a Personalization Reward Model with User embeddings.

``s(u, x, y)`` for a user's profile ``u``, an input ``x`` and a response ``y``.  A frozen sentence
encoder ``E`` (default: the packaged all-MiniLM-L6-v2) embeds profile items, input and response.
The user embedding pools ``E(item)`` by attention with ``E(x)`` as the query, concatenates the plain
mean, and maps both through an MLP.  The score head is an MLP over
``[u, E(x), E(y), u*E(y), |u-E(y)|]``.  Saved as ``model.safetensors`` + ``config.json``.

A profile with no items gives ``u = 0`` (the same input the zeroed-user ablation sees), so the
score is defined for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

MAX_TEXT_CHARS = 20_000  # the encoder truncates to its own max length; this bounds the tokenizer's work


class PRMUConfig(BaseModel):
    encoder: str | None = None  # None = the packaged all-MiniLM-L6-v2
    dim: int = 384
    hidden: int = 256
    dropout: float = 0.1
    max_items: int = 64
    task: str | None = None


def _mlp(i: int, h: int, o: int, p: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Dropout(p), nn.Linear(h, o))


class PRMU(nn.Module):
    def __init__(self, config: PRMUConfig):
        super().__init__()
        self.config = config
        d, h, p = config.dim, config.hidden, config.dropout
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.user_mlp = _mlp(2 * d, h, d, p)
        self.head = _mlp(5 * d, h, 1, p)

    def user_embedding(self, items: torch.Tensor, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """items [B, N, d], mask [B, N] (1 = real item), x [B, d] -> u [B, d] (zeros for empty profiles)."""
        has = mask.sum(1, keepdim=True)  # [B, 1]
        att = torch.einsum("bd,bnd->bn", self.query(x), self.key(items)) / items.shape[-1] ** 0.5
        att = att.masked_fill(mask == 0, -1e9).softmax(-1) * mask
        pooled = torch.einsum("bn,bnd->bd", att, items)
        mean = (items * mask.unsqueeze(-1)).sum(1) / has.clamp(min=1)
        u = self.user_mlp(torch.cat([pooled, mean], -1))
        return u * (has > 0).float()

    def score_with_user(self, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([u, x, y, u * y, (u - y).abs()], -1)).squeeze(-1)

    def forward(self, items: torch.Tensor, mask: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                zero_user: bool = False) -> torch.Tensor:
        u = self.user_embedding(items, mask, x)
        if zero_user:
            u = torch.zeros_like(u)
        return self.score_with_user(u, x, y)

    # ------------------------------------------------------------------------------- persistence
    def save(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(out / "model.safetensors"))
        (out / "config.json").write_text(self.config.model_dump_json(indent=2))
        return out

    @classmethod
    def load(cls, model_dir: str | Path) -> PRMU:
        from safetensors.torch import load_file

        d = Path(model_dir)
        if not (d / "config.json").exists() or not (d / "model.safetensors").exists():
            raise FileNotFoundError(f"{d}: not a PRMU directory (needs config.json and model.safetensors)")
        model = cls(PRMUConfig.model_validate_json((d / "config.json").read_text()))
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        model.eval()
        return model


class TextEmbedder:
    """Frozen sentence encoder with a per-text cache (profile items repeat across pairs and groups)."""

    def __init__(self, encoder: str | None = None, batch_size: int = 128, device: str | None = None):
        from tagpr.embedded import load_sentence_encoder

        self.model = load_sentence_encoder(encoder, device=device)
        self.dim = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        clipped = [("" if t is None else str(t))[:MAX_TEXT_CHARS] for t in texts]
        missing = [t for t in dict.fromkeys(clipped) if t not in self.cache]
        if missing:
            vecs = self.model.encode(missing, batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=progress)
            self.cache.update(zip(missing, vecs.astype(np.float32)))
        if not clipped:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.cache[t] for t in clipped])
