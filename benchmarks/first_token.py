"""Where a model's first answer token goes: onto the candidates or elsewhere (valid rows, stored set 0).

    .venv/bin/python benchmarks/first_token.py RUN_LLARA_DIR [RUN_LLARA_DIR ...] [--base] [--rows 48]
        [--base-dir resources/llm/smollm2-135m-instruct] [--data results/lastfm/data]
        [--embeddings results/lastfm/sasrec/seqrec/item_embeddings.parquet] [--threads 2]

For each tuned model (a tune stage's output folder: adapter/, projector.safetensors) and, with ``--base``, the
untuned base model (bare titles, its chat template), prints the mean over rows of: the first answer token's
probability mass on the 20 candidates' first tokens (a model that has learned to answer with a candidate puts
~1 there), the target's first-token probability, the first-token loss (-log of it; ln 20 = 3.0 is a uniform
pick among the candidates) and the first-token HR@1 (the target's first token ranks first among the
candidates' first tokens). The prompt and answer are the model's own (representation, answer format).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_token_stats(m, rows: list[dict], representation: str) -> dict[str, float]:
    """Mean first-token statistics of a loaded ``LlaraModel`` over ``rows`` (history, candidates, target)."""
    import numpy as np
    import torch

    enc = m.encoder
    rep = "plain" if m.zero_shot else representation
    mass, p_target, hit = [], [], []
    for r in rows:
        b = enc.inference_batch([r], rep)
        with torch.no_grad():
            logits = m.module.logits(b["input_ids"], b["attention_mask"], b["item_slots"])
        probs = torch.softmax(logits[0, -1].float(), -1)
        prompt_ids = b["input_ids"][0].tolist()
        firsts = []
        for c in r["candidates"]:
            seqs, k = enc.encode_with_answers([b["prompts"][0]], [enc.answer_text(c)])
            firsts.append(seqs[0][k[0]])
            assert seqs[0][:k[0]] == prompt_ids, "the answer merged into the prompt's last token"
        tgt = firsts[r["candidates"].index(r["target"])]
        mass.append(float(probs[sorted(set(firsts))].sum()))
        p_target.append(float(probs[tgt]))
        cand_p = probs[firsts]
        hit.append(float((cand_p > probs[tgt]).sum() == 0 and sum(f == tgt for f in firsts) == 1))
    return {"candidate_mass": float(np.mean(mass)), "target_p": float(np.mean(p_target)),
            "first_token_loss": float(np.mean(-np.log(np.maximum(p_target, 1e-30)))),
            "first_token_hr1": float(np.mean(hit))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="tune output folders (adapter/, projector.safetensors)")
    ap.add_argument("--base", action="store_true", help="also the untuned base model")
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--base-dir", type=Path, default=REPO / "resources" / "llm" / "smollm2-135m-instruct")
    ap.add_argument("--data", type=Path, default=REPO / "results" / "lastfm" / "data")
    ap.add_argument("--embeddings", type=Path, default=REPO / "results" / "lastfm" / "sasrec" / "seqrec" / "item_embeddings.parquet")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    from llara.llm.inference import load_llara
    from llara.llm.probe import load_probe_rows
    from llara.llm.projector import load_projector

    items = a.data / "items.parquet"
    print("| model | representation | rows | first-token mass on the candidates | p(target's first token) | "
          "first-token loss (uniform pick: 3.00) | first-token HR@1 (chance 0.05) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    todo = [(None, "plain")] if a.base else []
    todo += [(run, load_projector(run / "projector.safetensors")[1].get("representation", "hybrid")) for run in a.runs]
    for run, rep in todo:
        m = load_llara(a.base_dir, items, None if run is None else a.embeddings, None if run is None else run / "adapter",
                       None if run is None else run / "projector.safetensors", threads=a.threads, dtype="bfloat16")
        rows = load_probe_rows(str(a.data / "valid.parquet"), a.rows, len(m.titles))
        s = first_token_stats(m, rows, rep)
        print(f"| {'base (untuned)' if run is None else run} | {rep} | {len(rows)} | {s['candidate_mass']:.3f} | "
              f"{s['target_p']:.3f} | {s['first_token_loss']:.2f} | {s['first_token_hr1']:.3f} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
