"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item history.

Follows the reference implementation's block layout: item embeddings scaled by sqrt(d) plus
learned position embeddings, dropout, then per block a layer-normed query attending causally
over the sequence (residual on the normed query), a layer-normed point-wise feed-forward
network with a residual, padding positions zeroed, and a final layer norm. The user state is
the output at the most recent position. Unlike the reference code, padding keys are masked out
of the attention, so a state depends only on the real items up to its position.

Positions are slots of the left-padded window: the most recent item always has position
``max_len - 1``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from llara.seqrec.base import SeqRecModel


class CausalSelfAttention(nn.Module):
    """Multi-head attention; ``mask`` is a boolean ``[batch, 1, L, L]`` (True = may attend)."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"hidden_size {d} is not divisible by n_heads {n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, d = query.shape
        h = self.n_heads

        def heads(x: torch.Tensor) -> torch.Tensor:  # [b, L, d] -> [b, h, L, d/h]
            return x.view(b, length, h, d // h).transpose(1, 2)

        att = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(keys)), heads(self.v(keys)),
                                             attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(att.transpose(1, 2).reshape(b, length, d))


class SASRecBlock(nn.Module):
    """One transformer block as in the SASRec reference code."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(d, eps=1e-8)
        self.attn = CausalSelfAttention(d, n_heads, dropout)
        self.ffn_norm = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        x = q + self.attn(q, x, mask)
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * keep  # zero the padding positions


class SASRec(SeqRecModel):
    """Self-attentive sequential recommender."""

    name: ClassVar[str] = "sasrec"

    def __init__(self, n_items: int, hidden_size: int = 64, max_len: int = 10, dropout: float = 0.5,
                 n_layers: int = 2, n_heads: int = 1) -> None:
        super().__init__(n_items, hidden_size, max_len, dropout)
        self.n_layers, self.n_heads = int(n_layers), int(n_heads)
        self.pos_emb = nn.Embedding(self.max_len, hidden_size)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(hidden_size, self.n_heads, dropout) for _ in range(self.n_layers))
        self.final_norm = nn.LayerNorm(hidden_size, eps=1e-8)
        for name, p in self.named_parameters():  # the reference code's initialisation
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "n_layers": self.n_layers, "n_heads": self.n_heads}

    def attention_mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[batch, 1, L, L]`` boolean mask (True = may attend): position t sees the real items at
        positions <= t, and itself (so a padding row never attends to an empty set)."""
        length = seqs.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        mask = (causal & (seqs != self.pad_id)[:, None, :]) | torch.eye(length, dtype=torch.bool, device=seqs.device)
        return mask.unsqueeze(1)  # broadcast over heads

    def sequence_states(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[batch, max_len]`` left-padded histories -> ``[batch, max_len, d]`` per-position states."""
        length = seqs.shape[1]
        keep = (seqs != self.pad_id).unsqueeze(-1).to(self.item_emb.weight.dtype)  # [b, L, 1]
        positions = torch.arange(length, device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.hidden_size) + self.pos_emb(positions)
        x = self.emb_dropout(x) * keep
        mask = self.attention_mask(seqs)
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.final_norm(x)

    def _encode_left_aligned(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.sequence_states(seqs)[:, -1]
