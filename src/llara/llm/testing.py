"""A tiny randomly initialised Llama (+ a small byte-level BPE tokenizer with a chat template), saved in
Hugging Face layout: for unit tests and benchmarks of the LLM stage, no download needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_llama(out_dir: str | os.PathLike, corpus: Iterable[str], vocab_size: int = 384, hidden: int = 32,
                    layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0, chat: bool = True) -> Path:
    """Train a small BPE tokenizer on ``corpus`` and save it with a random ``LlamaForCausalLM`` to ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from llara.llm.prompts import load_templates

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus)
    for ds in ("lastfm", "movielens", "steam"):
        texts += load_templates(ds)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(texts * 3, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  unk_token="<|endoftext|>", pad_token="<|im_end|>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # trained-model-like embedding scale, so LoRA can move the (tied, frozen) logits
        model.get_input_embeddings().weight.normal_(0.0, 0.5)
    model.save_pretrained(out, safe_serialization=True)
    return out
