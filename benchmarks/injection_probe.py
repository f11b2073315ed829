#!/usr/bin/env python3
"""Injection probe: how fast does the tuned LLM learn to act on what only the behavioural tokens carry?

    .venv/bin/python benchmarks/injection_probe.py --data results/learnability/data \
        --embeddings results/learnability/sasrec/item_embeddings.parquet --task genre|marker [--steps 60]

A plain PyTorch loop over the tune stage's own module (``llara.llm.train.build_module``: LoRA, projector,
injection, the answer-token loss) and prompt encoder, on the learnability benchmark's synthetic data
(``benchmarks/learnability.py`` builds it). Every step draws a fresh batch of training sessions with
candidates sampled on the fly, and **before** the optimizer step on that batch it records the decision
accuracy: whether the answer's first token, restricted to the candidates' first tokens, picks the target.
So each figure is measured on samples the model has not trained on (online held-out accuracy), every
``--report`` steps, beside chance (1 / candidates).

Tasks:
  * ``genre``: the learnability task (one candidate shares the session's genre; the SASRec embeddings
    hold the genres, the titles do not). The model has to compare history and candidate embeddings.
  * ``marker``: a positive control for the injection path. The embedding table is replaced by random
    vectors in which half the items carry one fixed direction; the target is always the one marked
    candidate. No comparison is needed: the model only has to read a feature off one behavioural token.

Prints one table row per report window and writes ``probe.json`` beside ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from learnability import TEMPLATE  # the learnability benchmark's prompt (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]


def run(a: argparse.Namespace) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from llara.llm.data import load_item_embeddings, load_titles, load_train_rows, sample_candidates
    from llara.llm.model import load_base
    from llara.llm.prompts import IGNORE, PromptEncoder
    from llara.llm.train import TuneConfig, build_module

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    titles = load_titles(a.data / "items.parquet")
    n = len(titles)
    source_ids = pq.read_table(a.data / "items.parquet").column("source_id").to_pylist()
    if not all(str(s).startswith("genre") for s in source_ids):
        raise ValueError(f"{a.data / 'items.parquet'}: source_id must be 'genre<k>' (the learnability "
                         "benchmark's synthetic data, benchmarks/learnability.py); found e.g. "
                         f"{next(s for s in source_ids if not str(s).startswith('genre'))!r}")
    genre = np.array([int(s.removeprefix("genre")) for s in source_ids])
    if a.task == "marker":
        g = np.random.default_rng(a.seed)
        table = (g.normal(size=(n, 64)) * 0.3).astype("float32")
        u = g.normal(size=64).astype("float32")
        marked = np.arange(n) % 2 == 0
        table[marked] += 2.0 * u / np.linalg.norm(u)
    else:
        table = load_item_embeddings(a.embeddings, n)
    tok, base = load_base(a.base)
    enc = PromptEncoder(tok, titles, [TEMPLATE], "raw")
    module = build_module(base, TuneConfig(dataset="synthetic", seed=a.seed), table, enc.special_ids[0])
    lora = [p for n, p in module.named_parameters() if p.requires_grad and not n.startswith("projector.")]
    opt = torch.optim.Adam([{"params": lora, "lr": a.lr},
                            {"params": list(module.projector.parameters()), "lr": a.projector_lr or a.lr}])
    rows = load_train_rows(a.data / "train.parquet", n)
    first_tok = [tok(" " + t, add_special_tokens=False)["input_ids"][0] for t in titles]
    lm = module.causal_lm
    rng = np.random.default_rng(a.seed)
    hits, losses, report, t0 = [], [], [], time.perf_counter()
    for step in range(1, a.steps + 1):
        samples = []
        for i in rng.integers(len(rows.targets), size=a.batch):
            h, t = rows.histories[i], rows.targets[i]
            if a.task == "marker":
                t = int(rng.choice(np.flatnonzero(marked)))
                banned = sorted(set(np.flatnonzero(marked).tolist()) - {t})
            else:
                banned = sorted((set(np.flatnonzero(genre == genre[t]).tolist()) - {t}) | set(h))
            samples.append({"history": h, "candidates": sample_candidates(rng, banned, t, n, a.candidates),
                            "target": t, "representation": "hybrid"})
        batch = enc.training_batch(samples)
        module.eval()
        with torch.no_grad():  # decision accuracy before training on this batch
            hidden = lm.get_decoder()(inputs_embeds=module.embed(batch["input_ids"], batch["item_slots"]),
                                      attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
            first = (batch["labels"] != IGNORE).float().argmax(1)
            logits = lm.get_output_embeddings()(hidden[torch.arange(len(samples)), first - 1])
            for r, s in enumerate(samples):
                ids = torch.tensor([first_tok[c] for c in s["candidates"]])
                hits.append(int(s["candidates"][int(logits[r, ids].argmax())] == s["target"]))
        module.train()
        loss, _ = module(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % a.report == 0:
            w = hits[-a.report * a.batch:]
            report.append({"steps": f"{step - a.report + 1}-{step}", "accuracy": float(np.mean(w)), "n": len(w),
                           "loss": float(np.mean(losses[-a.report:])), "elapsed_s": round(time.perf_counter() - t0, 1)})
            r = report[-1]
            print(f"| {a.task} | {r['steps']} | {r['accuracy']:.3f} | {1 / a.candidates:.3f} | {r['n']} | "
                  f"{r['loss']:.3f} | {r['elapsed_s']:.0f} |", flush=True)
    result = {"settings": {k: str(v) for k, v in vars(a).items()}, "chance": 1 / a.candidates, "windows": report}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "results" / "learnability" / "data")
    ap.add_argument("--embeddings", type=Path,
                    default=REPO / "results" / "learnability" / "sasrec" / "item_embeddings.parquet")
    ap.add_argument("--base", type=Path, default=REPO / "resources" / "llm" / "smollm2-135m-instruct")
    ap.add_argument("--task", choices=["genre", "marker"], default="genre")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--report", type=int, default=20, help="steps per reported window")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--lr", type=float, default=2e-3, help="LoRA learning rate (Adam, constant)")
    ap.add_argument("--projector-lr", type=float, default=None, help="projector learning rate (default: --lr)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "learnability" / "probe.json")
    return ap


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    args = parser().parse_args()
    print("| task | steps | decision accuracy (held out) | chance | samples | loss | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    run(args)
