"""Adapter of rules evaluate / evaluate_zeroshot / evaluate_ablation: one call to llara.evaluate.run."""

from llara.runlog import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from llara.evaluate.run import evaluate_from_settings  # noqa: E402

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards  # noqa: F821
evaluate_from_settings(
    p.settings, base_dir=i.base, items_path=i.item_table, split_paths={s: i[f"split_{s}"] for s in p.settings["splits"]},
    predictions_path=snakemake.output.predictions, metrics_path=snakemake.output.metrics,  # noqa: F821
    dataset=w.dataset, method=p.method, seqrec=w.get("seqrec"), variant=w.get("variant"),
    adapter_dir=i.get("adapter"), projector_path=i.get("projector"), item_embeddings_path=i.get("item_embeddings"),
    templates_path=i.get("templates"),
    seed=p.seed, threads=snakemake.threads, train_seed=p.train_seed,  # noqa: F821
)
