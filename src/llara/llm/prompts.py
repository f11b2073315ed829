"""Prompt templates, item rendering (hybrid / text / id) and tokenisation with answer-only labels.

An item is rendered, depending on the representation, as

- ``hybrid``: ``title [HistoryEmb]`` in the history, ``title [CansEmb]`` among the candidates (the authors'
  order; ``token_position="before"`` gives ``[HistoryEmb] title`` / ``[CansEmb] title``); the special token's
  input embedding is later replaced by ``Proj(e_item)`` (see ``llara.llm.injection``);
- ``text``: ``title [PH]``: the placeholder keeps its own fixed embedding (LLaRA's text-only prompt);
- ``id``: ``[HistoryEmb]`` / ``[CansEmb]`` alone (behavioural token, no title);
- ``plain``: the bare title (zero-shot base model, which has no special tokens).

Labels are -100 on every prompt token and on padding; only the answer (``" " + title + "\\n"`` for raw
prompts; for chat prompts ``title + eos`` with ``answer_format="bare"`` or ``" " + title + eos`` with
``"spaced"``, which tokenises the title as it appears among the candidates) is learned. Tokens are assigned to the answer by their
character offsets in the full string, so the prompt tokens of a training sample are exactly the tokens
of the prompt alone (what inference feeds).
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import torch

SPECIAL_TOKENS = ("[PH]", "[HistoryEmb]", "[CansEmb]", "[ItemEmb]")
PH, HIST, CANS, ITEM = SPECIAL_TOKENS
REPRESENTATIONS = ("hybrid", "text", "id")
PROMPT_FORMATS = ("auto", "raw", "chat")
ANSWER_FORMATS = ("bare", "spaced")
TOKEN_POSITIONS = ("after", "before")
REQUIRED_FIELDS = {"history", "candidates"}
OPTIONAL_FIELDS = {"n_candidates"}
SEP = ", "
IGNORE = -100


def default_templates_path() -> Path:
    """The packaged templates file (``src/llara/llm/templates.yaml``)."""
    return Path(str(resources.files("llara.llm").joinpath("templates.yaml")))


def validate_template(template: str, where: str) -> None:
    """Fail unless ``template`` has {history} and {candidates} and no other field."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"{where}: template does not parse as a format string ({e}): {template!r}") from None
    missing = REQUIRED_FIELDS - fields
    if missing:
        raise ValueError(f"{where}: template lacks the placeholder(s) {sorted('{' + m + '}' for m in missing)}; "
                         f"found {sorted(fields) or 'none'} in {template!r}")
    unknown = fields - REQUIRED_FIELDS - OPTIONAL_FIELDS
    if unknown:
        raise ValueError(f"{where}: template has unknown placeholder(s) {sorted(unknown)}; "
                         f"allowed: {sorted(REQUIRED_FIELDS | OPTIONAL_FIELDS)}")


DOMAIN_FIELDS = ("noun", "verb", "past")  # the wording of a dataset's domain, in the generic templates
_IRREGULAR_PAST = {  # common irregular verbs a recommendation domain may use; anything else: set domain.past
    "read": "read", "buy": "bought", "see": "seen", "hear": "heard", "eat": "eaten", "drink": "drunk",
    "wear": "worn", "take": "taken", "choose": "chosen", "do": "done", "get": "got", "give": "given",
    "go": "gone", "keep": "kept", "make": "made", "put": "put", "ride": "ridden", "sing": "sung",
    "win": "won", "write": "written", "find": "found", "fly": "flown", "bring": "brought", "sell": "sold",
    "drive": "driven", "leave": "left", "meet": "met", "pay": "paid", "spend": "spent", "rent": "rented",
    "stop": "stopped", "shop": "shopped", "plan": "planned", "begin": "begun", "run": "run", "swim": "swum",
}


def past_participle(verb: str) -> str:
    """``listen to`` -> ``listened to``, ``watch`` -> ``watched``, ``read`` -> ``read`` (only the first word inflects)."""
    first, _, rest = verb.strip().partition(" ")
    low = first.lower()
    if low in _IRREGULAR_PAST:
        word = _IRREGULAR_PAST[low]
    elif low.endswith("e"):
        word = first + "d"
    elif len(low) > 1 and low.endswith("y") and low[-2] not in "aeiou":
        word = first[:-1] + "ied"
    else:
        word = first + "ed"
    return f"{word} {rest}".strip()


def domain_words(domain: dict[str, Any], where: str) -> dict[str, str]:
    """Check a ``{noun, verb[, past]}`` mapping (config ``where``) and fill in ``past``."""
    if not isinstance(domain, dict):
        raise ValueError(f"{where}: expected a mapping {{noun: ..., verb: ...}} or a domain name, found {domain!r}")
    unknown = set(domain) - set(DOMAIN_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {list(DOMAIN_FIELDS)}")
    words = {}
    for key in DOMAIN_FIELDS:
        value = domain.get(key)
        if value is None and key == "past" and isinstance(domain.get("verb"), str):
            value = past_participle(domain["verb"])
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "{}\n\r"):
            raise ValueError(f"{where}.{key}: expected a word or short phrase (no braces, one line), found {value!r}")
        words[key] = " ".join(value.split())
    return words


class _KeepRuntimeFields(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _read_templates_file(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"llm.templates: templates file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or "domains" not in data:
        raise ValueError(f"{path}: expected a mapping with keys 'datasets' and 'domains'")
    return data


def _checked(templates: Any, where: str) -> list[str]:
    if not templates or not isinstance(templates, list):
        raise ValueError(f"{where}: expected a non-empty list of templates")
    for i, t in enumerate(templates):
        if not isinstance(t, str):
            raise ValueError(f"{where}[{i}] is not a string")
        validate_template(t, f"{where}[{i}]")
    return list(templates)


def resolve_templates(dataset: str, path: str | os.PathLike | None = None,
                      domain: str | dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """A dataset's domain label and its prompt templates.

    ``domain`` (config ``datasets.<name>.domain``): a domain name of the templates file (``movie``), a
    ``{noun, verb[, past]}`` mapping that fills the file's ``generic`` templates, or None: the file's
    ``datasets`` map (the built-in datasets: artist, movie, game), else the dataset name itself.
    """
    path = Path(path) if path else default_templates_path()
    data = _read_templates_file(path)
    domains = data["domains"] or {}
    if isinstance(domain, dict):
        words = domain_words(domain, f"config datasets.{dataset}.domain")
        generic = data.get("generic")
        if not generic:
            raise ValueError(f"{path}: no 'generic' templates to fill with config datasets.{dataset}.domain {words}")
        for i, t in enumerate(generic):
            if not isinstance(t, str):
                raise ValueError(f"{path}: generic[{i}] is not a string")
            fields = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
            missing = {"noun", "verb"} - fields
            if missing:
                raise ValueError(f"{path}: generic[{i}] lacks the domain placeholder(s) {sorted(missing)}: {t!r}")
        filled = [t.format_map(_KeepRuntimeFields(words)) for t in generic]
        return words["noun"], _checked(filled, f"{path}: generic filled with {words}")
    name = domain if isinstance(domain, str) else (data.get("datasets") or {}).get(dataset, dataset)
    if name not in domains:
        hint = "" if domain is not None else (f"; set config datasets.{dataset}.domain to one of them or to "
                                              "{noun: ..., verb: ...}")
        raise ValueError(f"{path}: no templates for dataset {dataset!r} (domain {name!r}); domains: {sorted(domains)}{hint}")
    return name, _checked(domains[name], f"{path}: domains.{name}")


def load_templates(dataset: str, path: str | os.PathLike | None = None,
                   domain: str | dict[str, Any] | None = None) -> list[str]:
    """The list of templates for ``dataset`` (see :func:`resolve_templates`; packaged file when ``path`` is None)."""
    return resolve_templates(dataset, path, domain)[1]


def write_dataset_templates(dataset: str, out: str | os.PathLike, path: str | os.PathLike | None = None,
                            domain: str | dict[str, Any] | None = None) -> list[str]:
    """Write the templates of one dataset as a templates file of its own (what tuning and zero-shot
    evaluation read); returns them. The strings are copied unchanged."""
    import yaml

    from llara.io import atomic_path

    label, templates = resolve_templates(dataset, path, domain)
    source = Path(path) if path else default_templates_path()
    how = "its datasets map" if domain is None else f"config datasets.{dataset}.domain"
    head = f"# Prompt templates of dataset {dataset} (domain {label!r}) from {source.name} via {how}; written by the pipeline.\n"
    body = yaml.safe_dump({"datasets": {dataset: label}, "domains": {label: templates}}, sort_keys=False,
                          allow_unicode=True, width=10 ** 6)
    with atomic_path(out) as tmp:
        tmp.write_text(head + body, encoding="utf-8")
    return templates


_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def clean_title(title: str) -> str:
    """A title safe to put in a prompt: no special-token strings, no newlines, single spaces."""
    return " ".join(_SPECIAL_RE.sub("", str(title)).split())


def render_items(titles: Sequence[str], ids: Sequence[int], representation: str, token: str,
                 token_position: str = "after") -> str:
    """Render items as text for a prompt (``token`` is [HistoryEmb] or [CansEmb]; in hybrid prompts it follows
    the title, or precedes it with ``token_position="before"``)."""
    if representation == "hybrid":
        if token_position not in TOKEN_POSITIONS:
            raise ValueError(f"token_position: expected one of {TOKEN_POSITIONS}, found {token_position!r}")
        parts = [f"{titles[i]} {token}" if token_position == "after" else f"{token} {titles[i]}" for i in ids]
    elif representation == "text":
        parts = [f"{titles[i]} {PH}" for i in ids]
    elif representation == "id":
        parts = [token for _ in ids]
    elif representation == "plain":
        parts = [titles[i] for i in ids]
    else:
        raise ValueError(f"representation: expected one of {REPRESENTATIONS + ('plain',)}, found {representation!r}")
    return SEP.join(parts)


def add_special_tokens(tokenizer) -> list[int]:
    """Add LLaRA's special tokens (absorbing the space before them) and return their ids (contiguous)."""
    from tokenizers import AddedToken

    have = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    unk = tokenizer.unk_token_id
    if all(i is not None and i != unk for i in have):
        ids = list(have)
    else:
        tokenizer.add_tokens([AddedToken(t, lstrip=True, rstrip=False, special=True, normalized=False)
                              for t in SPECIAL_TOKENS], special_tokens=True)
        ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise RuntimeError(f"special tokens got non-contiguous ids {ids}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return ids


@dataclass
class PromptEncoder:
    """Turns rows (history, candidates[, target]) into token ids, labels and item slots.

    ``titles`` are indexed by item id; ``prompt_format`` is ``raw`` or ``chat`` (resolve ``auto`` with
    :func:`resolve_prompt_format` first).
    """

    tokenizer: Any
    titles: Sequence[str]
    templates: Sequence[str]
    prompt_format: str = "raw"
    answer_format: str = "bare"
    token_position: str = "after"

    def __post_init__(self):
        self.special_ids = add_special_tokens(self.tokenizer)
        self.ph_id, self.hist_id, self.cans_id, self.item_id = self.special_ids
        if self.prompt_format not in ("raw", "chat"):
            raise ValueError(f"prompt_format: expected raw or chat after resolution, found {self.prompt_format!r}")
        if self.prompt_format == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("prompt_format: 'chat' but the tokenizer has no chat template")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format: expected one of {ANSWER_FORMATS}, found {self.answer_format!r}")
        if self.token_position not in TOKEN_POSITIONS:
            raise ValueError(f"token_position: expected one of {TOKEN_POSITIONS}, found {self.token_position!r}")

    # ---- text ---------------------------------------------------------------------------
    def prompt_text(self, history: Sequence[int], candidates: Sequence[int], representation: str,
                    template: int = 0) -> str:
        """The full prompt string (chat-wrapped when the format is chat)."""
        body = self.templates[template % len(self.templates)].format(
            history=render_items(self.titles, history, representation, HIST, self.token_position),
            candidates=render_items(self.titles, candidates, representation, CANS, self.token_position),
            n_candidates=len(candidates))
        if self.prompt_format == "chat":
            return self.tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                                      add_generation_prompt=True)
        return body

    def answer_text(self, item: int) -> str:
        """The learned answer for ``item`` (also what candidate scoring scores).

        Chat: ``title + eos`` (``bare``) or ``" " + title + eos`` (``spaced``: the title's tokens are then
        those it has among the candidates, after ", "); raw prompts always end the answer with a newline."""
        if self.prompt_format == "chat":
            lead = " " if self.answer_format == "spaced" else ""
            return f"{lead}{self.titles[item]}{self.tokenizer.eos_token}"
        return f" {self.titles[item]}\n"

    @property
    def add_bos(self) -> bool:
        return self.prompt_format == "raw"

    # ---- tokens ---------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]):
        return self.tokenizer(texts, add_special_tokens=self.add_bos, return_offsets_mapping=True)

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of prompts alone (inference)."""
        return self.tokenizer(prompts, add_special_tokens=self.add_bos)["input_ids"]

    def encode_with_answers(self, prompts: list[str], answers: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids of ``prompt + answer`` and, per sample, the number of prompt tokens (the rest is answer).

        A token belongs to the answer when it starts at or after the prompt's last character.
        """
        enc = self._tokenize([p + a for p, a in zip(prompts, answers)])
        ids, n_prompt = [], []
        for row_ids, offs, p in zip(enc["input_ids"], enc["offset_mapping"], prompts):
            cut = len(p)
            k = len(row_ids)
            for j, (s, e) in enumerate(offs):
                if s >= cut and e > s:
                    k = j
                    break
            # special tokens (BOS) have (0, 0) offsets: they are never the first answer token.
            ids.append(list(row_ids))
            n_prompt.append(k)
        return ids, n_prompt

    def item_slots(self, input_ids: torch.Tensor, histories: Sequence[Sequence[int]],
                   candidates: Sequence[Sequence[int]]) -> torch.Tensor:
        """Item id per position for [HistoryEmb]/[CansEmb] tokens, -1 elsewhere (vectorised over the batch).

        The k-th [HistoryEmb] of a row is its k-th history item, the k-th [CansEmb] its k-th candidate.
        """
        b = input_ids.shape[0]
        slots = torch.full_like(input_ids, -1)
        for tok, lists in ((self.hist_id, histories), (self.cans_id, candidates)):
            width = max(1, max((len(x) for x in lists), default=1))
            table = torch.full((b, width), -1, dtype=torch.long)
            lens = torch.tensor([len(x) for x in lists], dtype=torch.long)
            if lens.sum() > 0:
                flat = torch.tensor([i for x in lists for i in x], dtype=torch.long)
                cols = torch.cat([torch.arange(n) for n in lens.tolist()])
                rows = torch.repeat_interleave(torch.arange(b), lens)
                table[rows, cols] = flat
            mask = input_ids == tok
            counts = mask.sum(1)
            bad = (counts > 0) & (counts != lens)
            if bad.any():
                r = int(torch.nonzero(bad)[0, 0])
                raise ValueError(f"row {r}: {int(counts[r])} {self.tokenizer.convert_ids_to_tokens(tok)} tokens "
                                 f"in the prompt but {int(lens[r])} items")
            rank = (mask.cumsum(1) - 1).clamp(min=0, max=width - 1)
            slots = torch.where(mask, table.gather(1, rank), slots)
        return slots

    def pad(self, seqs: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad token id lists to a [B, L] tensor and its attention mask (``side`` left or right)."""
        pad_id = self.tokenizer.pad_token_id
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            if side == "left":
                ids[i, length - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[i, length - len(s):] = 1
            else:
                ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
                mask[i, :len(s)] = 1
        return ids, mask

    def encode_training(self, samples: Sequence[dict]) -> tuple[list[list[int]], list[int]]:
        """Token ids of training samples (dicts: history, candidates, target, representation, template) and,
        per sample, the number of prompt tokens (:meth:`encode_with_answers`)."""
        prompts = [self.prompt_text(s["history"], s["candidates"], s["representation"], s.get("template", 0))
                   for s in samples]
        answers = [self.answer_text(s["target"]) for s in samples]
        return self.encode_with_answers(prompts, answers)

    def training_batch(self, samples: Sequence[dict], encoded: tuple[list[list[int]], list[int]] | None = None
                       ) -> dict[str, torch.Tensor]:
        """Batch of training samples (dicts: history, candidates, target, representation, template).

        Right-padded; labels -100 everywhere except the answer tokens. ``encoded``: the samples'
        :meth:`encode_training` result when already computed.
        """
        seqs, n_prompt = encoded if encoded is not None else self.encode_training(samples)
        input_ids, attn = self.pad(seqs, "right")
        labels = input_ids.clone()
        pos = torch.arange(input_ids.shape[1])[None, :]
        labels[(pos < torch.tensor(n_prompt)[:, None]) | (attn == 0)] = IGNORE
        return {"input_ids": input_ids, "attention_mask": attn, "labels": labels,
                "item_slots": self.item_slots(input_ids, [s["history"] for s in samples],
                                              [s["candidates"] for s in samples])}

    def inference_batch(self, rows: Sequence[dict], representation: str, template: int = 0) -> dict[str, torch.Tensor]:
        """Left-padded prompts of rows (dicts: history, candidates) for generation / scoring."""
        prompts = [self.prompt_text(r["history"], r["candidates"], representation, template) for r in rows]
        seqs = self.encode_prompts(prompts)
        input_ids, attn = self.pad(seqs, "left")
        return {"input_ids": input_ids, "attention_mask": attn,
                "item_slots": self.item_slots(input_ids, [r["history"] for r in rows],
                                              [r["candidates"] for r in rows]),
                "prompts": prompts}


def resolve_prompt_format(prompt_format: str, tokenizer) -> str:
    """``auto`` -> ``chat`` when the tokenizer has a chat template (instruct models), else ``raw``."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"llm.prompt_format: expected one of {PROMPT_FORMATS}, found {prompt_format!r}")
    if prompt_format == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "raw"
    return prompt_format
