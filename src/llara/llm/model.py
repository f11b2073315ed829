"""The LLaRA module: base causal LM (+ LoRA), projector, frozen item-embedding table; loss on answers only."""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from llara.llm.injection import inject
from llara.llm.projector import LlaraProjector

log = logging.getLogger("llara.llm.model")

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, found {dtype!r}")
    return DTYPES[dtype]


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """The training precision ``auto`` stands for on this machine: ``bf16`` on a GPU with bf16 support
    or a CPU with native bf16 matrix units (AVX512-BF16 / AMX), else ``fp32``. Without them PyTorch's
    bf16 matmul falls back to a scalar path: measured 5x slower than fp32 on a 2-core AVX2 EPYC."""
    if precision != "auto":
        return precision
    if on_gpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def load_base(base_dir: str | os.PathLike, dtype: str | torch.dtype = "float32", device: str = "cpu",
              attn_implementation: str = "sdpa"):
    """(tokenizer, model) from a Hugging Face folder; fails naming the folder when it is not one.

    Attention is PyTorch's ``scaled_dot_product_attention`` (``sdpa``), named explicitly: its fused CPU
    (flash) and CUDA kernels; ``eager`` is the reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llara.llm.base import check_model_dir

    base_dir = check_model_dir(base_dir, key="base model (resources/llm/{name})")
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    # loaded straight onto ``device`` in ``dtype`` (no full-size copy in host memory or in fp32)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=resolve_dtype(dtype), device_map=device,
                                                 attn_implementation=attn_implementation)
    if getattr(model.config, "quantization_config", None) is not None:
        raise ValueError(f"{base_dir}: the model is marked quantized ({model.config.quantization_config}); "
                         f"rebuild it as a plain model (llara.llm.base.convert_gguf)")
    return tok, model


def add_lora(model, r: int = 8, alpha: int = 32, dropout: float = 0.1, targets: list[str] | None = None):
    """Wrap ``model`` with a fresh peft LoRA adapter on the attention and MLP projections."""
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=list(targets or LORA_TARGETS), inference_mode=False)
    return get_peft_model(model, cfg)


PROJECTOR_SCALES = ("free", "token_norm")


def init_projector(d_rec: int, embed: nn.Embedding, seed: int, scale: str = "free") -> LlaraProjector:
    """A seeded projector whose (frozen) special rows are the mean of the base token embeddings; ``scale``
    ``token_norm`` fixes its outputs' L2 norm to the mean norm of those embeddings (``free``: as the authors)."""
    if scale not in PROJECTOR_SCALES:
        raise ValueError(f"tune.projector_scale: expected one of {PROJECTOR_SCALES}, found {scale!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        norm = float(embed.weight.detach().float().norm(dim=1).mean()) if scale == "token_norm" else 0.0
        proj = LlaraProjector(d_rec, embed.weight.shape[1], out_norm=norm)
        with torch.no_grad():
            proj.special.copy_(embed.weight.float().mean(0, keepdim=True).expand_as(proj.special))
    return proj


class LlaraLM(nn.Module):
    """Base LM (plain or peft) + projector + frozen item table; ``forward`` returns the answer-token loss."""

    def __init__(self, lm: nn.Module, projector: LlaraProjector | None, item_table: torch.Tensor | None,
                 special_first_id: int):
        super().__init__()
        self.lm = lm
        self.projector = projector
        if item_table is not None:
            self.register_buffer("item_table", item_table, persistent=False)
        else:
            self.item_table = None
        self.special_first_id = special_first_id

    @property
    def causal_lm(self) -> nn.Module:
        """The HF ``*ForCausalLM`` (LoRA layers injected when peft-wrapped)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def embed(self, input_ids: torch.Tensor, item_slots: torch.Tensor | None) -> torch.Tensor:
        return inject(self.causal_lm.get_input_embeddings(), self.projector, self.item_table, input_ids,
                      item_slots, self.special_first_id)

    def forward(self, input_ids, attention_mask, labels, item_slots=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over answer tokens, number of answer tokens); the LM head runs on answer positions only.

        Also leaves detached per-row diagnostics in ``self.last_stats`` (no host sync): ``row_loss`` (sum of
        answer-token losses), ``row_tokens``, ``first_loss`` (the loss of the first answer token, the one that
        decides which candidate is named) and ``inject_norm`` / ``inject_count`` (sum and count of the L2 norms
        of the injected vectors)."""
        lm = self.causal_lm
        embeds = self.embed(input_ids, item_slots)
        hidden = lm.get_decoder()(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
        tgt = labels[:, 1:]
        sel = tgt != -100
        h = hidden[:, :-1][sel]
        logits = lm.get_output_embeddings()(h).float()
        n = sel.sum()
        tok_loss = F.cross_entropy(logits, tgt[sel], reduction="none")
        loss = tok_loss.sum() / n.clamp(min=1)
        with torch.no_grad():
            rows = sel.nonzero()[:, 0]
            b = input_ids.shape[0]
            row_loss = torch.zeros(b, dtype=torch.float32, device=tok_loss.device).index_add_(0, rows, tok_loss.detach())
            row_tokens = sel.sum(1).float()
            first = sel & (sel.long().cumsum(1) == 1)          # the first answer token of each row
            first_loss = torch.zeros(b, dtype=torch.float32, device=tok_loss.device)
            first_loss[first.nonzero()[:, 0]] = tok_loss.detach()[first[sel]]
            slots = item_slots >= 0 if item_slots is not None else torch.zeros_like(sel)
            norms = embeds.detach()[slots].float().norm(dim=-1) if slots.any() else embeds.new_zeros(0).float()
            self.last_stats = {"row_loss": row_loss, "row_tokens": row_tokens, "first_loss": first_loss,
                               "inject_norm": norms.sum(), "inject_count": torch.tensor(float(norms.numel()),
                                                                                        device=norms.device)}
        return loss, n

    @torch.no_grad()
    def token_embedding_norm(self) -> float:
        """Mean L2 norm of the base model's input token embeddings (the scale injected vectors sit beside)."""
        return float(self.causal_lm.get_input_embeddings().weight.float().norm(dim=1).mean())

    @torch.no_grad()
    def logits(self, input_ids, attention_mask, item_slots=None) -> torch.Tensor:
        """Full logits (for tests and reference scoring)."""
        embeds = self.embed(input_ids, item_slots)
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=pos, use_cache=False).logits
