"""The MLP projector (seqrec item embedding -> LLM token-embedding space) and LLaRA's special-token rows.

The base model's embedding matrix is never resized: the special tokens ([PH], [HistoryEmb], [CansEmb],
[ItemEmb]) get ids past the base vocabulary in the tokenizer, and their input embeddings come from
``LlaraProjector.special`` (saved in ``projector.safetensors``). The adapter therefore stays a standard
peft LoRA folder over the unmodified base model, and the LM head never predicts them.

``special`` is a frozen buffer, as in the authors' code, where these rows are the rows
``resize_token_embeddings`` appends to the frozen embedding matrix: they start at the mean token
embedding (what ``resize_token_embeddings`` does in current transformers) and are never trained. Only
[PH] is ever read (text-only prompts); [HistoryEmb] and [CansEmb] positions always hold ``Proj(e_i)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llara.io import save_safetensors
from llara.llm.prompts import SPECIAL_TOKENS


class LlaraProjector(nn.Module):
    """``Linear(d_rec, d_llm) -> GELU -> Linear(d_llm, d_llm)`` plus one frozen row per special token.

    ``out_norm`` > 0 (``tune.projector_scale: token_norm``) rescales every output vector to that L2 norm (the
    mean norm of the LLM's token embeddings), so an injected vector always sits at a token's scale; 0 (the
    authors' projector) leaves the MLP's output as it is. A frozen buffer, saved with the projector."""

    def __init__(self, d_rec: int, d_llm: int, n_special: int = len(SPECIAL_TOKENS), out_norm: float = 0.0):
        super().__init__()
        self.d_rec, self.d_llm, self.n_special = d_rec, d_llm, n_special
        self.mlp = nn.Sequential(nn.Linear(d_rec, d_llm), nn.GELU(), nn.Linear(d_llm, d_llm))
        self.register_buffer("special", torch.zeros(n_special, d_llm))
        self.register_buffer("out_norm", torch.tensor(float(out_norm)))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(x)
        target = self.out_norm.to(y.dtype)
        scale = target / y.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return torch.where(target > 0, y * scale, y)  # no host sync on the buffer's value

    def forward(self, x: torch.Tensor, special_index: torch.Tensor | None = None):
        """``mlp(x)`` (rescaled when ``out_norm`` > 0); with ``special_index`` also the rows
        ``special[special_index]`` (both read inside forward, so ZeRO-3 has gathered the parameters)."""
        if special_index is None:
            return self.project(x)
        return self.project(x), self.special[special_index]


def save_projector(projector: LlaraProjector, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Save the projector (fp32) with ``meta`` (JSON in the safetensors metadata under ``llara``)."""
    tensors = {k: v.detach().float() for k, v in projector.state_dict().items()}
    meta = {"d_rec": projector.d_rec, "d_llm": projector.d_llm, "special_tokens": list(SPECIAL_TOKENS), **meta}
    save_safetensors(tensors, path, metadata={"llara": json.dumps(meta)})


def load_projector(path: str | os.PathLike) -> tuple[LlaraProjector, dict[str, Any]]:
    """Load a projector saved by :func:`save_projector`; returns (module, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"projector file {path} does not exist")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("llara", "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "mlp.0.weight" not in tensors or "special" not in tensors:
        raise ValueError(f"{path}: not a LLaRA projector (keys {sorted(tensors)})")
    d_llm, d_rec = tensors["mlp.0.weight"].shape
    proj = LlaraProjector(d_rec, d_llm, tensors["special"].shape[0])
    tensors.setdefault("out_norm", torch.tensor(0.0))  # projectors saved before projector_scale existed
    proj.load_state_dict(tensors)
    if meta.get("special_tokens", list(SPECIAL_TOKENS)) != list(SPECIAL_TOKENS):
        raise ValueError(f"{path}: special tokens {meta.get('special_tokens')} differ from {list(SPECIAL_TOKENS)}")
    return proj.eval(), meta
