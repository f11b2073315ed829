"""Inference API of a (tuned or zero-shot) LLaRA model: load, greedy generation, candidate scoring.

Stable signatures (used by ``llara.evaluate``)::

    load_llara(base_dir, items_path, item_embeddings_path=None, adapter_dir=None, projector_path=None,
               dataset="lastfm", dtype="float32", *, templates_path=None, prompt_format=None,
               merge_adapter=True, device=None, threads=None) -> LlaraModel
    generate(llara_model, rows, representation="hybrid", batch_size=8, max_new_tokens=32, *,
             template=0, progress=False) -> list[str]
    score_candidates(llara_model, rows, representation="hybrid", batch_size=4, *,
                     template=0, progress=False) -> np.ndarray          # float64 [len(rows), n_candidates]

``rows`` is a sequence of dicts (or anything with ``["history"]`` and ``["candidates"]``): item-id lists of
items.parquet (history oldest first). All rows of one ``score_candidates`` call must have the same number
of candidates.

- Tuned model: pass ``adapter_dir`` and ``projector_path`` (and ``item_embeddings_path`` for the hybrid or
  id representation). Prompt format (raw / chat) and templates are the ones stored at training time.
- Zero-shot base model: ``adapter_dir=None, projector_path=None``. Items are rendered as bare titles
  (there are no special tokens), instruct models get their chat template (``prompt_format``
  ``auto``); ``representation`` is ignored (``plain``).
- ``generate`` is greedy, batched with left padding, and returns the first line of the answer, stripped
  (LLaRA's post-processing); ``inputs_embeds`` go through the same vectorised injection as training.
- ``score_candidates`` returns the log-likelihood (sum of token log-probs) of each candidate's answer text
  (the exact training answer: ``" " + title + "\\n"`` raw; chat ``title + eos``, or ``" " + title + eos`` when the
  model was tuned with ``answer_format: spaced``) after the prompt. The
  prompt is run once per row and its KV cache expanded over the candidates; equal to naive per-candidate
  scoring (:func:`score_candidates_naive`) up to float rounding.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from llara.llm.data import load_item_embeddings, load_titles
from llara.llm.model import LlaraLM, load_base, resolve_dtype
from llara.llm.projector import load_projector
from llara.llm.prompts import PromptEncoder, load_templates, resolve_prompt_format

log = logging.getLogger("llara.llm.inference")


@dataclass
class LlaraModel:
    """A loaded model: ``module`` (LlaraLM), ``encoder`` (prompts/tokens), item ``titles`` and metadata."""

    module: LlaraLM
    encoder: PromptEncoder
    titles: list[str]
    zero_shot: bool
    meta: dict[str, Any] = field(default_factory=dict)
    stop_ids: list[int] = field(default_factory=list)

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


def _stop_token_ids(tok) -> list[int]:
    """eos plus every token whose text contains a newline (raw answers end with one)."""
    ids = {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids(tok.eos_token) if tok.eos_token else None)
           if i is not None}
    vocab = tok.get_vocab()
    for t, i in vocab.items():
        if "\n" in tok.convert_tokens_to_string([t]):
            ids.add(i)
    return sorted(ids)


def load_llara(base_dir, items_path, item_embeddings_path=None, adapter_dir=None, projector_path=None,
               dataset="lastfm", dtype="float32", *, templates_path=None, prompt_format=None,
               merge_adapter=True, device=None, threads=None) -> LlaraModel:
    """Load the base LLM (+ LoRA adapter and projector when given); both None = the zero-shot base model.

    ``dtype``: float32 | bfloat16 | float16. ``merge_adapter`` merges LoRA into the weights (faster;
    equal up to rounding). ``prompt_format`` / ``templates_path`` override what the projector recorded.
    """
    if threads:
        torch.set_num_threads(threads)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (adapter_dir is None) != (projector_path is None):
        raise ValueError("load_llara: pass both adapter_dir and projector_path (tuned model) or neither (zero-shot)")
    titles = load_titles(items_path)
    # straight in the evaluation dtype on the evaluation device: a 7B model never exists in fp32 or in
    # host memory as a whole (LoRA is merged there too)
    tok, base = load_base(base_dir, dtype, device=device)
    meta: dict[str, Any] = {}
    projector = None
    if projector_path is not None:
        projector, meta = load_projector(projector_path)
        if meta.get("d_llm", projector.d_llm) != base.config.hidden_size:
            raise ValueError(f"{projector_path}: projector output size {projector.d_llm} != hidden size "
                             f"{base.config.hidden_size} of {base_dir}")
        from peft import PeftModel

        if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
            raise FileNotFoundError(f"{adapter_dir}: not a peft adapter folder (no adapter_config.json)")
        lm = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
        if merge_adapter:
            lm = lm.merge_and_unload()
    else:
        lm = base
    lm.eval()
    fmt = prompt_format or meta.get("prompt_format") or "auto"
    fmt = resolve_prompt_format(fmt, tok)
    if templates_path is not None or not meta.get("templates"):
        templates = load_templates(meta.get("dataset", dataset), templates_path)
    else:
        templates = list(meta["templates"])
    table = None
    if item_embeddings_path is not None:
        table = torch.from_numpy(load_item_embeddings(item_embeddings_path, len(titles)))
        if projector is not None and table.shape[1] != projector.d_rec:
            raise ValueError(f"{item_embeddings_path}: embedding dimension {table.shape[1]} != the projector's "
                             f"input size {projector.d_rec} ({projector_path})")
    enc = PromptEncoder(tok, titles, templates, fmt, meta.get("answer_format", "bare"),
                        meta.get("token_position", "after"))
    if projector is not None:
        projector = projector.to(device=device, dtype=resolve_dtype(dtype))
    module = LlaraLM(lm, projector, table, enc.special_ids[0]).eval()
    if not merge_adapter and projector is not None:
        module.lm.to(device=device, dtype=resolve_dtype(dtype))  # the unmerged LoRA matrices (small)
    if table is not None:
        module.item_table = table.to(device)  # keep the table in fp32
    return LlaraModel(module, enc, titles, projector is None, meta, _stop_token_ids(tok))


def _representation(m: LlaraModel, representation: str) -> str:
    if m.zero_shot:
        return "plain"
    if representation in ("hybrid", "id") and m.module.item_table is None:
        raise ValueError(f"representation {representation!r} needs item_embeddings_path in load_llara")
    if representation not in ("hybrid", "text", "id"):
        raise ValueError(f"representation: expected hybrid, text or id, found {representation!r}")
    return representation


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _rows(rows) -> list[dict]:
    out = []
    for r in rows:
        out.append({"history": [int(x) for x in r["history"]], "candidates": [int(x) for x in r["candidates"]]})
    return out


@torch.no_grad()
def generate(llara_model: LlaraModel, rows, representation="hybrid", batch_size=8, max_new_tokens=32, *,
             template=0, progress=False) -> list[str]:
    """Greedy answers (first line, stripped) for each row, batched with left padding."""
    m = llara_model
    rep = _representation(m, representation)
    rows = _rows(rows)
    lm = m.module.causal_lm
    tok = m.tokenizer
    outs: list[str] = []
    it = list(_chunks(len(rows), batch_size))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="generate", mininterval=5)
    for sl in it:
        b = m.encoder.inference_batch(rows[sl], rep, template)
        ids, mask = b["input_ids"].to(m.device), b["attention_mask"].to(m.device)
        embeds = m.module.embed(ids, b["item_slots"].to(m.device))
        gen = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                          do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id, eos_token_id=m.stop_ids,
                          temperature=None, top_p=None, top_k=None)
        for text in tok.batch_decode(gen, skip_special_tokens=True, clean_up_tokenization_spaces=False):
            outs.append(text.strip().split("\n")[0].strip())
    return outs


def _answer_ids(m: LlaraModel, prompt: str, prompt_ids: list[int], items: Sequence[int]) -> list[list[int]]:
    """Token ids of each item's answer as tokenised after ``prompt`` (prefix checked against ``prompt_ids``)."""
    enc = m.encoder
    seqs, n_prompt = enc.encode_with_answers([prompt] * len(items), [enc.answer_text(i) for i in items])
    out = []
    for s, k, item in zip(seqs, n_prompt, items):
        if s[:k] != prompt_ids:
            # the answer merged into the prompt's last token: tokenise the answer on its own instead
            out.append(enc.tokenizer(enc.answer_text(item), add_special_tokens=False)["input_ids"])
        else:
            out.append(s[k:])
    return out


def _cache_of(out: Any) -> Any:
    """The key/value cache of a forward pass: ``out.cache`` in the pinned transformers, ``out.past_key_values``
    in older releases (5.17, the GPU image's)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def score_candidates(llara_model: LlaraModel, rows, representation="hybrid", batch_size=4, *, template=0,
                     progress=False) -> np.ndarray:
    """Log-likelihood of each candidate's answer after the row's prompt: float64 array [rows, n_candidates].

    One forward over the (left-padded) prompts, the KV cache repeated ``n_candidates`` times per row,
    one forward over all candidate answers (right-padded).
    """
    m = llara_model
    rep = _representation(m, representation)
    rows = _rows(rows)
    if not rows:
        return np.zeros((0, 0))
    n_c = len(rows[0]["candidates"])
    if any(len(r["candidates"]) != n_c for r in rows):
        raise ValueError("score_candidates: all rows must have the same number of candidates")
    lm = m.module.causal_lm
    dev = m.device
    pad_id = m.tokenizer.pad_token_id
    scores = np.zeros((len(rows), n_c), dtype=np.float64)
    it = list(_chunks(len(rows), batch_size))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="score", mininterval=5)
    for sl in it:
        chunk = rows[sl]
        b = m.encoder.inference_batch(chunk, rep, template)
        ids, mask = b["input_ids"].to(dev), b["attention_mask"].to(dev)
        n_rows, p_len = ids.shape
        embeds = m.module.embed(ids, b["item_slots"].to(dev))
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        # only the last prompt position's logits are needed (saves a [B, P, V] tensor)
        out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(out.logits[:, -1].float(), -1)          # [B, V]
        cache = _cache_of(out)
        # candidate answers, [B*C, Lc] right-padded
        prompt_ids = [row[mk.bool()].tolist() for row, mk in zip(b["input_ids"], b["attention_mask"])]
        ans = []
        for r, prompt, pids in zip(chunk, b["prompts"], prompt_ids):
            ans.extend(_answer_ids(m, prompt, pids, r["candidates"]))
        lc = max(len(a) for a in ans)
        cand = torch.full((len(ans), lc), pad_id, dtype=torch.long)
        cmask = torch.zeros((len(ans), lc), dtype=torch.long)
        for i, a in enumerate(ans):
            cand[i, :len(a)] = torch.tensor(a)
            cmask[i, :len(a)] = 1
        cand, cmask = cand.to(dev), cmask.to(dev)
        cache.batch_repeat_interleave(n_c)
        full_mask = torch.cat([mask.repeat_interleave(n_c, 0), cmask], 1)
        cpos = mask.sum(1).repeat_interleave(n_c)[:, None] + torch.arange(lc, device=dev)[None, :]
        cemb = lm.get_input_embeddings()(cand)
        out2 = lm(inputs_embeds=cemb, attention_mask=full_mask, position_ids=cpos, cache=cache,
                  use_cache=True)
        tok_lp = torch.zeros((len(ans), lc), dtype=torch.float32, device=dev)
        tok_lp[:, 0] = first_logp.repeat_interleave(n_c, 0).gather(1, cand[:, :1]).squeeze(1)
        if lc > 1:  # position t predicts token t+1; log p = logit - logsumexp (no full log-softmax copy)
            logits = out2.logits[:, :-1].float()
            tok_lp[:, 1:] = logits.gather(2, cand[:, 1:, None]).squeeze(2) - torch.logsumexp(logits, -1)
            del logits
        s = (tok_lp * cmask).sum(1).double().cpu().numpy().reshape(n_rows, n_c)
        scores[sl] = s
        del cache, out, out2
    return scores


@torch.no_grad()
def score_candidates_naive(llara_model: LlaraModel, rows, representation="hybrid", *, template=0) -> np.ndarray:
    """Reference: one full forward per (row, candidate) over ``prompt + answer``; slow, for tests/benchmarks."""
    m = llara_model
    rep = _representation(m, representation)
    rows = _rows(rows)
    lm = m.module.causal_lm
    dev = m.device
    scores = np.zeros((len(rows), len(rows[0]["candidates"])), dtype=np.float64)
    for i, r in enumerate(rows):
        b = m.encoder.inference_batch([r], rep, template)
        pids = b["input_ids"][0].tolist()
        answers = _answer_ids(m, b["prompts"][0], pids, r["candidates"])
        for j, a in enumerate(answers):
            ids = torch.tensor([pids + a], device=dev)
            slots = torch.cat([b["item_slots"], torch.full((1, len(a)), -1)], 1).to(dev)
            embeds = m.module.embed(ids, slots)
            logits = lm(inputs_embeds=embeds, use_cache=False).logits[0].float()
            lp = torch.log_softmax(logits[len(pids) - 1:-1], -1)
            scores[i, j] = lp.gather(1, torch.tensor(a, device=dev)[:, None]).sum().item()
    return scores
