"""Caser (Tang & Wang, WSDM 2018): convolutions over the L x d matrix of the history's embeddings.

Horizontal filters of every height 1..L (``n_h`` of each) slide over time and are max-pooled
(union-level and point-level sequential patterns); ``n_v`` vertical filters of height L weight
the L positions per embedding dimension. Both are concatenated, dropped out and mapped to the
user state by a fully-connected layer with ReLU (Caser's ``fc1`` + ``ac_fc``). There are no user
embeddings (users are not shared between the splits). Histories are left-padded to L.

Implementation note: a horizontal filter of shape (h, d) over the 1 x L x d "image" is exactly a
1-D convolution of width h over the sequence with d input channels, and a vertical filter of shape
(L, 1) is a weighted sum over the L positions, i.e. a linear map L -> n_v applied per embedding
dimension. Both are written that way here (same parameters and outputs as Conv2d, ~2x faster on CPU).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from llara.seqrec.base import SeqRecModel


class Caser(SeqRecModel):
    """Convolutional sequence embedding recommender."""

    name: ClassVar[str] = "caser"

    def __init__(self, n_items: int, hidden_size: int = 64, max_len: int = 10, dropout: float = 0.5,
                 n_h: int = 16, n_v: int = 4) -> None:
        super().__init__(n_items, hidden_size, max_len, dropout)
        self.n_h, self.n_v = int(n_h), int(n_v)
        length, d = self.max_len, self.hidden_size
        self.conv_v = nn.Linear(length, self.n_v)  # n_v vertical filters of shape (L, 1)
        self.conv_h = nn.ModuleList(nn.Conv1d(d, self.n_h, h) for h in range(1, length + 1))  # shapes (h, d)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.n_v * d + self.n_h * length, d)
        nn.init.normal_(self.item_emb.weight, std=d ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "n_h": self.n_h, "n_v": self.n_v}

    def _encode_left_aligned(self, seqs: torch.Tensor) -> torch.Tensor:
        channels = self.item_emb(seqs).transpose(1, 2)  # the L x d matrix as [b, d, L]
        vertical = self.conv_v(channels).transpose(1, 2).flatten(1)  # [b, n_v * d]
        horizontal = [F.relu(conv(channels)).amax(dim=2) for conv in self.conv_h]  # each [b, n_h], max over time
        z = torch.cat([vertical, *horizontal], dim=1)
        return F.relu(self.fc(self.dropout(z)))
