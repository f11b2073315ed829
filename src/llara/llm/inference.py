"""Inference API of a (tuned or zero-shot) LLaRA model: load, greedy generation, candidate scoring.

Stable signatures (used by ``llara.evaluate``)::

    load_llara(base_dir, items_path, item_embeddings_path=None, adapter_dir=None, projector_path=None,
               dataset="lastfm", dtype="float32", *, templates_path=None, prompt_format=None,
               merge_adapter=True, device=None, threads=None) -> LlaraModel
    generate(llara_model, rows, representation="hybrid", batch_size=8, max_new_tokens=32, *,
             template=0, progress=False) -> list[str]
    score_candidates(llara_model, rows, representation="hybrid", batch_size=4, *,
                     template=0, progress=False) -> np.ndarray          # float64 [len(rows), n_candidates]
    generate_and_score(llara_model, rows, representation="hybrid", batch_size=8, max_new_tokens=32, *,
                       template=0, progress=False, timing=None) -> (list[str], np.ndarray)

``rows`` is a sequence of dicts (or anything with ``["history"]`` and ``["candidates"]``): item-id lists of
items.parquet (history oldest first). All rows of one ``score_candidates`` call must have the same number
of candidates.

- Tuned model: pass ``adapter_dir`` and ``projector_path`` (and ``item_embeddings_path`` for the hybrid or
  id representation). Prompt format (raw / chat) and templates are the ones stored at training time.
- Zero-shot base model: ``adapter_dir=None, projector_path=None``. Items are rendered as bare titles
  (there are no special tokens), instruct models get their chat template (``prompt_format``
  ``auto``); ``representation`` is ignored (``plain``).
- ``generate`` is greedy, batched with left padding, and returns the first line of the answer, stripped
  (LLaRA's post-processing); ``inputs_embeds`` go through the same vectorised injection as training. Its own
  decoding loop gives Hugging Face ``generate``'s greedy output (stop tokens: eos and every token holding a
  newline) without HF's full-vocabulary logits over the whole prompt, and drops finished rows from the batch.
- ``score_candidates`` returns the log-likelihood (sum of token log-probs) of each candidate's answer text
  (the exact training answer: ``" " + title + "\\n"`` raw; chat ``title + eos``, or ``" " + title + eos`` when the
  model was tuned with ``answer_format: spaced``) after the prompt. The prompts of a batch are run once; all
  candidates of a row are then packed after its prompt and run in one forward against the prompt cache with
  a 4D attention mask (each candidate sees the prompt and its own earlier tokens; nothing is copied), the LM
  head only where a token is scored. Equal to naive per-candidate scoring (:func:`score_candidates_naive`) up to
  float rounding: fp32 within 1e-4 + 1e-5 relative (tests/test_inference_speed_paths.py; 8e-5 at most on 32 real
  LastFM rows with SmolLM2-135M); bf16 differs from naive by up to ~2 nats either way (as the earlier KV-cache
  repeat did), so only near-ties (top-2 gap < 0.1 there) can change the best candidate.
- ``generate_and_score`` gives both from one prompt forward per batch (the evaluation of both modes).
- Rows are batched longest first (then put back in their order): similar lengths waste little padding.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
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


def _rows(rows) -> list[dict]:
    out = []
    for r in rows:
        out.append({"history": [int(x) for x in r["history"]], "candidates": [int(x) for x in r["candidates"]]})
    return out


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


def _cache_kw(module) -> str:
    """The keyword a forward pass takes its key/value cache by: ``cache`` in the pinned transformers,
    ``past_key_values`` in older releases (5.17, the GPU image's), where ``cache=`` would be swallowed by
    ``**kwargs`` and the cache silently ignored."""
    return "cache" if "cache" in inspect.signature(type(module).forward).parameters else "past_key_values"


@dataclass
class _Prepared:
    """Rows with their prompt token ids (unpadded) and, for scoring, each candidate's answer token ids."""

    rows: list[dict]
    prompt_ids: list[list[int]]
    answers: list[list[list[int]]] | None

    def order(self) -> list[int]:
        """Rows longest first (prompt + all answers): batches of similar lengths waste little padding, and the
        largest batch runs first (an out-of-memory error comes at once)."""
        def size(i: int) -> int:
            return len(self.prompt_ids[i]) + (sum(map(len, self.answers[i])) if self.answers is not None else 0)

        return sorted(range(len(self.rows)), key=lambda i: -size(i))


def _prepare(m: LlaraModel, rows: list[dict], rep: str, template: int, answers: bool) -> _Prepared:
    enc = m.encoder
    texts = [enc.prompt_text(r["history"], r["candidates"], rep, template) for r in rows]
    ids = [list(x) for x in enc.encode_prompts(texts)]
    ans = [_answer_ids(m, t, i, r["candidates"]) for t, i, r in zip(texts, ids, rows)] if answers else None
    return _Prepared(rows, ids, ans)


def _batches(prep: _Prepared, batch_size: int, desc: str, progress: bool):
    order = prep.order()
    it = [order[i:i + batch_size] for i in range(0, len(order), max(1, int(batch_size)))]
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=desc, mininterval=5)
    return it


@dataclass
class _Prefill:
    """One batch's left-padded prompts after their forward pass: mask [B, P], the position of each row's last
    prompt token, the float32 logits there [B, V] and the key/value cache (P positions)."""

    mask: torch.Tensor
    last_pos: torch.Tensor
    first_logits: torch.Tensor
    cache: Any


def _prefill(m: LlaraModel, prep: _Prepared, idx: list[int]) -> _Prefill:
    """Forward of the left-padded prompts of rows ``idx`` (as ``inference_batch`` pads and injects them);
    position ids as Hugging Face ``generate`` derives them from the mask."""
    enc, dev, lm = m.encoder, m.device, m.module.causal_lm
    ids, mask = enc.pad([prep.prompt_ids[i] for i in idx], "left")
    slots = enc.item_slots(ids, [prep.rows[i]["history"] for i in idx], [prep.rows[i]["candidates"] for i in idx])
    ids, mask = ids.to(dev), mask.to(dev)
    embeds = m.module.embed(ids, slots.to(dev))
    pos = mask.cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    # only the last prompt position's logits are needed (saves a [B, P, V] tensor)
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    return _Prefill(mask, pos[:, -1], out.logits[:, -1].float(), _cache_of(out))


# rows of full-vocabulary logits computed at once when scoring candidate tokens (1024 x 49k fp32 = 200 MB)
_HEAD_CHUNK = 1024


def _score_on_cache(m: LlaraModel, pre: _Prefill, answers: list[list[list[int]]], crop: bool = False) -> np.ndarray:
    """Log-likelihood of each row's candidate answers [B, C] after its prompt, from the prefilled cache.

    All candidates of a row are packed after its prompt in one sequence (right-padded over the batch) and run
    in one forward against the cache, with a 4D mask: a candidate token sees the row's prompt and the earlier
    tokens of its own candidate; its position id continues the prompt's. The LM head runs only where a next
    token is scored. ``crop``: cut the cache back to the prompts afterwards (for decoding from it)."""
    lm = m.module.causal_lm
    dec = lm.get_decoder()
    dev = m.device
    n_rows, p_len = pre.mask.shape
    n_c = len(answers[0])
    s_len = max(1, max(sum(map(len, ans)) for ans in answers))
    cand = torch.full((n_rows, s_len), m.tokenizer.pad_token_id, dtype=torch.long)
    seg = torch.full((n_rows, s_len), -1, dtype=torch.long)
    tpos = torch.zeros((n_rows, s_len), dtype=torch.long)
    first_row, first_tok, first_pair = [], [], []            # the first answer token: scored from the prompt
    src_row, src_col, tgt, pair = [], [], [], []              # later tokens: from the previous candidate token
    for r, ans in enumerate(answers):
        off = 0
        for j, a in enumerate(ans):
            k = len(a)
            if k == 0:
                continue
            cand[r, off:off + k] = torch.tensor(a, dtype=torch.long)
            seg[r, off:off + k] = j
            tpos[r, off:off + k] = torch.arange(k)
            first_row.append(r)
            first_tok.append(a[0])
            first_pair.append(r * n_c + j)
            src_row += [r] * (k - 1)
            src_col += range(off, off + k - 1)
            tgt += a[1:]
            pair += [r * n_c + j] * (k - 1)
            off += k
    scores = torch.zeros(n_rows * n_c, dtype=torch.float64, device=dev)
    first_lp = torch.log_softmax(pre.first_logits, -1)
    fp = torch.tensor(first_pair, dtype=torch.long, device=dev)
    scores.index_add_(0, fp, first_lp[torch.tensor(first_row, device=dev), torch.tensor(first_tok, device=dev)].double())
    # [B, 1, S, P + S]: the real prompt tokens, then the earlier tokens of the query's own candidate. Padding
    # queries see the prompt (never an empty row: no NaN)
    ar = torch.arange(s_len)
    own = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] >= 0) & (ar[None, None, :] <= ar[None, :, None])
    mask4 = torch.cat([pre.mask.bool().cpu()[:, None, :].expand(n_rows, s_len, p_len), own], -1)[:, None].to(dev)
    impl = getattr(lm.config, "_attn_implementation", "sdpa") or "sdpa"
    if impl == "eager":  # additive mask
        dtype = lm.get_input_embeddings().weight.dtype
        mask4 = torch.zeros(mask4.shape, dtype=dtype, device=dev).masked_fill_(~mask4, torch.finfo(dtype).min)
    elif impl != "sdpa":
        raise ValueError(f"candidate scoring packs candidates with a 4D attention mask, which attention "
                         f"implementation {impl!r} does not take; load the model with sdpa or eager attention")
    pos = (pre.last_pos.cpu()[:, None] + 1 + tpos).to(dev)
    cand = cand.to(dev)
    hidden = dec(inputs_embeds=lm.get_input_embeddings()(cand), attention_mask=mask4, position_ids=pos,
                 use_cache=True, **{_cache_kw(dec): pre.cache}).last_hidden_state
    if tgt:
        head = lm.get_output_embeddings()
        h = hidden[torch.tensor(src_row, device=dev), torch.tensor(src_col, device=dev)]
        tgt_t = torch.tensor(tgt, dtype=torch.long, device=dev)
        pair_t = torch.tensor(pair, dtype=torch.long, device=dev)
        for i in range(0, h.shape[0], _HEAD_CHUNK):
            logits = head(h[i:i + _HEAD_CHUNK]).float()
            lp = logits.gather(1, tgt_t[i:i + _HEAD_CHUNK, None]).squeeze(1) - torch.logsumexp(logits, -1)
            scores.index_add_(0, pair_t[i:i + _HEAD_CHUNK], lp.double())
            del logits
    if crop:
        pre.cache.crop(-s_len)  # a negative count removes that many positions (5.17 and the pinned release)
    return scores.cpu().numpy().reshape(n_rows, n_c)


def _greedy(m: LlaraModel, pre: _Prefill, max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of a prefilled batch, as Hugging Face ``generate`` (do_sample=False, num_beams=1): the
    argmax of the float32 logits, a row ends with its first stop token (included) or after ``max_new_tokens``.
    Finished rows leave the batch (and the cache) instead of decoding padding until the last row ends."""
    lm = m.module.causal_lm
    kw = _cache_kw(lm)
    dev = m.device
    n = pre.mask.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    if max_new_tokens < 1:
        return out
    stop = torch.tensor(m.stop_ids, dtype=torch.long, device=dev)
    active = list(range(n))
    cache, mask, pos = pre.cache, pre.mask, pre.last_pos
    nxt = pre.first_logits.argmax(-1)
    for step in range(max_new_tokens):
        for r, t in zip(active, nxt.tolist()):
            out[r].append(t)
        if step == max_new_tokens - 1:
            break
        done = torch.isin(nxt, stop)
        n_done = int(done.sum())
        if n_done == len(active):
            break
        if n_done:
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            mask, pos, nxt = mask[keep], pos[keep], nxt[keep]
            active = [active[i] for i in keep.tolist()]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
        pos = pos + 1
        o = lm(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos[:, None], use_cache=True,
               **{kw: cache})
        cache = _cache_of(o)
        nxt = o.logits[:, -1].float().argmax(-1)
    return out


def _first_lines(m: LlaraModel, token_lists: list[list[int]]) -> list[str]:
    texts = m.tokenizer.batch_decode(token_lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return [t.strip().split("\n")[0].strip() for t in texts]


def _check_candidates(rows: list[dict], who: str) -> int:
    n_c = len(rows[0]["candidates"])
    if any(len(r["candidates"]) != n_c for r in rows):
        raise ValueError(f"{who}: all rows must have the same number of candidates")
    return n_c


@torch.no_grad()
def generate(llara_model: LlaraModel, rows, representation="hybrid", batch_size=8, max_new_tokens=32, *,
             template=0, progress=False) -> list[str]:
    """Greedy answers (first line, stripped) for each row, batched with left padding.

    Rows are batched longest prompt first (little padding); one forward over the prompts (logits at the last
    position only), then greedy decoding with the KV cache in which finished rows leave the batch."""
    m = llara_model
    rep = _representation(m, representation)
    rows = _rows(rows)
    if not rows:
        return []
    prep = _prepare(m, rows, rep, template, answers=False)
    outs: list[str] = [""] * len(rows)
    for idx in _batches(prep, batch_size, "generate", progress):
        texts = _first_lines(m, _greedy(m, _prefill(m, prep, idx), max_new_tokens))
        for i, t in zip(idx, texts):
            outs[i] = t
    return outs


@torch.no_grad()
def score_candidates(llara_model: LlaraModel, rows, representation="hybrid", batch_size=4, *, template=0,
                     progress=False) -> np.ndarray:
    """Log-likelihood of each candidate's answer after the row's prompt: float64 array [rows, n_candidates].

    Per batch of ``batch_size`` rows (longest first): one forward over the left-padded prompts, then one
    forward of all candidate answers packed after them against the prompt cache (4D mask, no copy of the
    cache); the LM head only where an answer token is scored."""
    m = llara_model
    rep = _representation(m, representation)
    rows = _rows(rows)
    if not rows:
        return np.zeros((0, 0))
    n_c = _check_candidates(rows, "score_candidates")
    prep = _prepare(m, rows, rep, template, answers=True)
    scores = np.zeros((len(rows), n_c), dtype=np.float64)
    for idx in _batches(prep, batch_size, "score", progress):
        scores[idx] = _score_on_cache(m, _prefill(m, prep, idx), [prep.answers[i] for i in idx])
    return scores


@torch.no_grad()
def generate_and_score(llara_model: LlaraModel, rows, representation="hybrid", batch_size=8, max_new_tokens=32, *,
                       template=0, progress=False, timing: dict | None = None) -> tuple[list[str], np.ndarray]:
    """:func:`generate` and :func:`score_candidates` of the same rows from one prompt forward per batch.

    Per batch of ``batch_size`` rows: the prompts' forward, the candidates against its cache (as
    :func:`score_candidates`), the cache cropped back to the prompts, then greedy decoding (as :func:`generate`).
    Returns ``(answers, scores)``. ``timing``, when given, accumulates the seconds of ``prefill``, ``score``
    and ``decode``."""
    m = llara_model
    rep = _representation(m, representation)
    rows = _rows(rows)
    if not rows:
        return [], np.zeros((0, 0))
    n_c = _check_candidates(rows, "generate_and_score")
    t = timing if timing is not None else {}
    for key in ("prefill", "score", "decode"):
        t.setdefault(key, 0.0)
    prep = _prepare(m, rows, rep, template, answers=True)
    outs: list[str] = [""] * len(rows)
    scores = np.zeros((len(rows), n_c), dtype=np.float64)
    dev = m.device
    for idx in _batches(prep, batch_size, "generate+score", progress):
        t0 = time.perf_counter()
        pre = _prefill(m, prep, idx)
        if dev.type == "cuda":  # the prompt forward's own time (kernels run asynchronously)
            torch.cuda.synchronize(dev)
        t1 = time.perf_counter()
        scores[idx] = _score_on_cache(m, pre, [prep.answers[i] for i in idx], crop=True)
        t2 = time.perf_counter()
        texts = _first_lines(m, _greedy(m, pre, max_new_tokens))
        for i, s in zip(idx, texts):
            outs[i] = s
        t3 = time.perf_counter()
        t["prefill"] += t1 - t0
        t["score"] += t2 - t1
        t["decode"] += t3 - t2
    return outs, scores


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
