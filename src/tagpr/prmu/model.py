"""PRMU: a Personalization Reward Model with User embeddings.

``s(u, x, y)`` for a user's profile ``u``, an input ``x`` and a response ``y``.  A frozen sentence
encoder ``E`` (default: the packaged all-MiniLM-L6-v2) embeds profile items, input and response.
The user embedding is a query-aware attention pooling over the profile: the keys are the items'
embeddings ``E(document)`` (what each item was about), scored against ``E(x)``; the values are the
embeddings of what the user *produced* in each item (``E(output)``: the tag given, the score, the
title or tweet written; ``LaMPTask.output_field``).  The pooled vector and the plain mean of the
values go through an MLP, so ``u`` lives in the response space and ``u*E(y)`` compares like with
like.  (Values = item embeddings, as in the paper's description, made ``u`` carry almost no label
information on synthetic LaMP-2: the item text is dominated by the movie description.)  The score head is an MLP over
``[u, E(x), E(y), u*E(y), |u-E(y)|]``.  Saved as ``model.safetensors`` + ``config.json``.

A profile with no items gives ``u = 0`` (the same input the zeroed-user ablation sees), so the
score is defined for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
import torch.nn.functional as F
from torch import nn

MAX_TEXT_CHARS = 20_000  # the encoder truncates to its own max length; this bounds the tokenizer's work
STYLE_DIM = 10
_ELONGATED = re.compile(r"([A-Za-z])\1\1")


def style_features(text: str) -> np.ndarray:
    """Surface style of a text in [0, 1]^STYLE_DIM (what sentence encoders normalise away)."""
    t = text[:MAX_TEXT_CHARS]
    n = max(1, len(t))
    letters = [c for c in t if c.isalpha()]
    words = t.split()
    return np.array([
        min(len(words), 60) / 60,
        sum(c.isupper() for c in letters) / max(1, len(letters)),
        float(bool(letters) and t == t.lower()),
        min(1.0, 10 * sum(c in ".,;:!?-'\"()" for c in t) / n),
        min(3, t.count("!")) / 3,
        min(3, sum(w[:1] in "#@" for w in words)) / 3,
        min(1.0, 10 * sum(ord(c) > 127 for c in t) / n),
        float(bool(_ELONGATED.search(t))),
        float(t.rstrip().endswith((".", "!", "?"))),
        float("..." in t or "…" in t),
    ], dtype=np.float32)


class PRMUConfig(BaseModel):
    encoder: str | None = None  # None = the packaged all-MiniLM-L6-v2
    dim: int = 384  # encoder dimension + style_dim
    style_dim: int = STYLE_DIM
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
        # direct evidence: cosine of the response with what the user produced (pooled, mean), and how far
        # its surface style is from the user's mean style
        self.evidence = nn.Linear(2 + config.style_dim, 1)

    def user_embedding(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """keys/values [B, N, d], mask [B, N] (1 = real item), x [B, d] -> u [B, d] (zeros for empty profiles)."""
        has = mask.sum(1, keepdim=True)  # [B, 1]
        att = torch.einsum("bd,bnd->bn", self.query(x), self.key(keys)) / keys.shape[-1] ** 0.5
        att = att.masked_fill(mask == 0, -1e9).softmax(-1) * mask
        pooled = torch.einsum("bn,bnd->bd", att, values)
        mean = (values * mask.unsqueeze(-1)).sum(1) / has.clamp(min=1)
        u = torch.cat([self.user_mlp(torch.cat([pooled, mean], -1)), pooled, mean], -1)
        return u * (has > 0).float()

    def score_with_user(self, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``u`` as returned by :meth:`user_embedding`: [B, 3d] = (MLP output, pooled, mean)."""
        d, k = y.shape[-1], self.config.style_dim
        user, pooled, mean = u[:, :d], u[:, d : 2 * d], u[:, 2 * d :]
        sem = slice(0, d - k)
        sims = torch.stack([F.cosine_similarity(pooled[:, sem], y[:, sem], dim=-1),
                            F.cosine_similarity(mean[:, sem], y[:, sem], dim=-1)], -1)
        style_gap = -(mean[:, d - k :] - y[:, d - k :]).abs()
        has_user = (pooled.abs().sum(-1, keepdim=True) > 0).float()
        sims = torch.nan_to_num(torch.cat([sims, style_gap], -1)) * has_user
        head = self.head(torch.cat([user, x, y, user * y, (user - y).abs()], -1)).squeeze(-1)
        return head + self.evidence(sims).squeeze(-1)

    def forward(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, x: torch.Tensor,
                y: torch.Tensor, zero_user: bool = False) -> torch.Tensor:
        u = self.user_embedding(keys, values, mask, x)
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
        try:
            model.load_state_dict(load_file(str(d / "model.safetensors")))
        except RuntimeError as e:  # shapes or names from another layout (e.g. an older tagpr)
            detail = str(e).splitlines()[-1].strip()
            raise ValueError(f"{d}: model.safetensors does not fit this version's PRMU ({detail}); "
                             "retrain it with `tagpr train prmu`") from e
        model.eval()
        return model


class TextEmbedder:
    """Frozen sentence encoder with a per-text cache (profile items repeat across pairs and groups)."""

    def __init__(self, encoder: str | None = None, batch_size: int = 128, device: str | None = None):
        from tagpr.embedded import load_sentence_encoder

        self.model = load_sentence_encoder(encoder, device=device)
        self.dim = int(self.model.get_embedding_dimension()) + STYLE_DIM  # semantic, then style features
        self.batch_size = batch_size
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        clipped = [("" if t is None else str(t))[:MAX_TEXT_CHARS] for t in texts]
        missing = [t for t in dict.fromkeys(clipped) if t not in self.cache]
        if missing:
            vecs = self.model.encode(missing, batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=progress)
            self.cache.update((t, np.concatenate([v.astype(np.float32), style_features(t)])) for t, v in zip(missing, vecs))
        if not clipped:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.cache[t] for t in clipped])
