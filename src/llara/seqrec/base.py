"""The interface shared by every sequential recommender, and the padding helpers they use.

A history batch is a ``[batch, length]`` int64 tensor of item ids where the padding id is
``n_items`` (the extra last row of the item table). Real items must be contiguous and oldest
first; the padding may be on the left or on the right: :func:`left_align` and
:func:`right_align` move the real items to one end without changing their order, so every
model accepts both layouts. Histories longer than the model's ``max_len`` keep their most
recent ``max_len`` items.

A model maps a history batch to one user state per row (:meth:`SeqRecModel.encode`) and scores
items by the dot product of that state with the item-embedding table (:meth:`SeqRecModel.score_all`,
:meth:`SeqRecModel.score`).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn


def left_align(seqs: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Move the real items of each row to the right end (left padding), keeping their order."""
    is_item = (seqs != pad_id).to(torch.int8)
    order = torch.argsort(is_item, dim=1, stable=True)  # padding (0) first, then items in order
    return torch.gather(seqs, 1, order)


def right_align(seqs: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Move the real items of each row to the left end (right padding), keeping their order."""
    is_pad = (seqs == pad_id).to(torch.int8)
    order = torch.argsort(is_pad, dim=1, stable=True)  # items (0) first in order, then padding
    return torch.gather(seqs, 1, order)


def fit_width(left_aligned: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    """Crop (keep the most recent items) or left-pad a left-aligned batch to exactly ``width`` columns."""
    length = left_aligned.shape[1]
    if length >= width:
        return left_aligned[:, length - width:]
    pad = left_aligned.new_full((left_aligned.shape[0], width - length), pad_id)
    return torch.cat([pad, left_aligned], dim=1)


class SeqRecModel(nn.Module, abc.ABC):
    """Base class: an item table with a padding row, an encoder to implement, dot-product scoring.

    Subclasses set ``name`` and implement :meth:`_encode_left_aligned`, which receives a batch
    left-padded to exactly ``max_len`` columns.
    """

    name: ClassVar[str] = ""

    def __init__(self, n_items: int, hidden_size: int = 64, max_len: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = int(n_items)
        self.pad_id = int(n_items)  # the padding row is the last row of the item table
        self.hidden_size = int(hidden_size)
        self.max_len = int(max_len)
        self.dropout_p = float(dropout)
        self.item_emb = nn.Embedding(self.n_items + 1, self.hidden_size, padding_idx=self.pad_id)

    def hparams(self) -> dict[str, Any]:
        """The architecture hyper-parameters needed to rebuild this model (see ``llara.seqrec.registry``)."""
        return {"hidden_size": self.hidden_size, "max_len": self.max_len, "dropout": self.dropout_p}

    @abc.abstractmethod
    def _encode_left_aligned(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[batch, max_len]`` left-aligned histories -> ``[batch, hidden_size]``; each model defines it."""

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[batch, length]`` left- or right-padded histories -> ``[batch, hidden_size]`` user states."""
        if seqs.dim() != 2:
            raise ValueError(f"histories must be a [batch, length] tensor, got shape {tuple(seqs.shape)}")
        seqs = fit_width(left_align(seqs.long(), self.pad_id), self.max_len, self.pad_id)
        return self._encode_left_aligned(seqs)

    def item_embeddings(self) -> torch.Tensor:
        """The ``[n_items, hidden_size]`` item table without the padding row."""
        return self.item_emb.weight[: self.n_items]

    def score_all(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each history: ``[batch, n_items]`` (the padding row is excluded)."""
        return self.encode(seqs) @ self.item_embeddings().T

    def score(self, seqs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of given items: ``items`` is ``[batch, n]`` (or ``[batch, sets, n]``), output has its shape."""
        state = self.encode(seqs)
        emb = self.item_emb(items)  # [batch, ..., d]
        shape = (state.shape[0],) + (1,) * (items.dim() - 2) + (1, state.shape[1])
        return (emb * state.view(shape)).sum(-1)
