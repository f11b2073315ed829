"""Vectorised hybrid-embedding injection, and the slow per-row reference it is tested against.

``inputs_embeds`` of a batch is built with one embedding lookup, one gather of the (frozen) seqrec item
embeddings at every behavioural-token slot, one projector call for the whole batch and one
``masked_scatter``; special tokens without a slot ([PH], and [HistoryEmb]/[CansEmb] when no item
is given) take their (frozen) row. No Python loop over rows or items.
"""

from __future__ import annotations

import torch
from torch import nn

from llara.llm.projector import LlaraProjector


def inject(embed_tokens: nn.Embedding, projector: LlaraProjector | None, item_table: torch.Tensor | None,
           input_ids: torch.Tensor, item_slots: torch.Tensor | None, special_first_id: int) -> torch.Tensor:
    """``inputs_embeds`` [B, L, d] for ``input_ids`` with LLaRA's special tokens and projected items.

    ``item_slots`` [B, L] holds the item id at each behavioural token, -1 elsewhere. ``special_first_id``
    is the id of the first special token; ids ``>= special_first_id`` index ``projector.special``.
    All trainable projector parameters always take part in the graph (with zero gradient when unused),
    so every data-parallel rank reduces the same set of gradients.
    """
    is_special = input_ids >= special_first_id
    emb = embed_tokens(input_ids.masked_fill(is_special, 0))
    if projector is None:
        if is_special.any():
            raise ValueError("the prompt holds LLaRA special tokens but no projector is loaded (zero-shot): "
                             "use the 'plain' item rendering")
        return emb
    # one projector call: the MLP on the slot items (+ one dummy row so it is always in the graph)
    # and the special rows at every position (masked below)
    pos = item_slots >= 0 if item_slots is not None else torch.zeros_like(is_special)
    items = item_slots[pos] if item_slots is not None else input_ids.new_zeros(0)
    sp_index = (input_ids - special_first_id).clamp(min=0, max=projector.n_special - 1)
    mlp_dtype = projector.mlp[0].weight.dtype
    if item_table is None:
        if items.numel():
            raise ValueError("the prompt holds behavioural tokens but no item embedding table is loaded")
        rec = torch.zeros(1, projector.d_rec, dtype=mlp_dtype, device=input_ids.device)
    else:
        rec = item_table.index_select(0, torch.cat([items, items.new_zeros(1)])).to(mlp_dtype)
    vecs, sp_rows = projector(rec, sp_index)
    emb = torch.where(is_special.unsqueeze(-1), sp_rows.to(emb.dtype), emb)
    vecs = vecs.to(emb.dtype)
    emb = emb.masked_scatter(pos.unsqueeze(-1), vecs[:-1]) if items.numel() else emb
    return emb + 0.0 * vecs[-1:].sum()


def inject_reference(embed_tokens: nn.Embedding, projector: LlaraProjector | None, item_table: torch.Tensor | None,
                     input_ids: torch.Tensor, histories, candidates, special_ids) -> torch.Tensor:
    """Slow reference (the official code's per-row loops): for each row, the k-th [HistoryEmb] gets
    ``Proj(e[history[k]])``, the k-th [CansEmb] ``Proj(e[candidates[k]])``; other special tokens their
    (frozen) row."""
    ph_id, hist_id, cans_id, _ = special_ids
    first = special_ids[0]
    out = []
    for b in range(input_ids.shape[0]):
        row = []
        k_h = k_c = 0
        for tok in input_ids[b].tolist():
            if tok >= first:
                if tok == hist_id and k_h < len(histories[b]):
                    v = projector(item_table[histories[b][k_h]].to(projector.mlp[0].weight.dtype))
                    k_h += 1
                elif tok == cans_id and k_c < len(candidates[b]):
                    v = projector(item_table[candidates[b][k_c]].to(projector.mlp[0].weight.dtype))
                    k_c += 1
                else:
                    v = projector.special[tok - first]
            else:
                v = embed_tokens.weight[tok]
            row.append(v.to(embed_tokens.weight.dtype))
        out.append(torch.stack(row))
    return torch.stack(out)
