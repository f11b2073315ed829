"""Adapter of rules evaluate / evaluate_zeroshot / evaluate_ablation: one call to llara.evaluate.run
(+ summary.md, printed, where the rule declares it: llara.evaluate.summary)."""

from llara.runlog import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from llara.evaluate.run import evaluate_from_settings  # noqa: E402
from llara.evaluate.summary import write_summary  # noqa: E402
from llara.io import check_replaceable  # noqa: E402

i, p, w, out = snakemake.input, snakemake.params, snakemake.wildcards, snakemake.output  # noqa: F821
if out.get("summary"):
    check_replaceable(out.summary)  # before any work, as every output
evaluate_from_settings(
    p.settings, base_dir=i.base, items_path=i.item_table, split_paths={s: i[f"split_{s}"] for s in p.settings["splits"]},
    predictions_path=out.predictions, metrics_path=out.metrics,
    dataset=w.dataset, method=p.method, seqrec=w.get("seqrec"), variant=w.get("variant"),
    adapter_dir=i.get("adapter"), projector_path=i.get("projector"), item_embeddings_path=i.get("item_embeddings"),
    templates_path=i.get("templates"),
    seed=p.seed, threads=snakemake.threads, train_seed=p.train_seed,  # noqa: F821
)
if out.get("summary"):
    backbone = [i.backbone_metrics] if i.get("backbone_metrics") else []
    print(write_summary(out.metrics, out.summary, backbone), f"(also in {out.summary})", sep="\n", flush=True)
