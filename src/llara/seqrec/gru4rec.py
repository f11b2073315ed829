"""GRU4Rec (Hidasi et al., ICLR 2016): item embedding -> GRU -> hidden state after the last item.

The history is right-aligned so the GRU reads only real items before the state that is taken
(the padding after it cannot influence it, the GRU being causal). A linear output layer maps the
GRU state (bounded by tanh) to the user state that is dot-multiplied with the item table, the
role of GRU4Rec's feed-forward output layer when input and output item embeddings are shared;
on LastFM valid it converged in about half the epochs of the bare state.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from llara.seqrec.base import SeqRecModel, right_align


class GRU4Rec(SeqRecModel):
    """Recurrent sequential recommender."""

    name: ClassVar[str] = "gru4rec"

    def __init__(self, n_items: int, hidden_size: int = 64, max_len: int = 10, dropout: float = 0.3,
                 n_layers: int = 1) -> None:
        super().__init__(n_items, hidden_size, max_len, dropout)
        self.n_layers = int(n_layers)
        self.emb_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=self.n_layers, batch_first=True,
                          dropout=dropout if self.n_layers > 1 else 0.0)
        self.out = nn.Linear(hidden_size, hidden_size)
        nn.init.normal_(self.item_emb.weight, std=hidden_size ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "n_layers": self.n_layers}

    def _encode_left_aligned(self, seqs: torch.Tensor) -> torch.Tensor:
        seqs = right_align(seqs, self.pad_id)
        lengths = (seqs != self.pad_id).sum(1).clamp(min=1)
        out, _ = self.gru(self.emb_dropout(self.item_emb(seqs)))  # [b, L, d]
        return self.out(out[torch.arange(seqs.shape[0], device=seqs.device), lengths - 1])
