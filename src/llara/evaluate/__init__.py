"""Evaluation: the official generation metric, metrics.json blocks, aggregation over seeds, comparisons.

Ranking metrics and bootstrap intervals live below this stage in :mod:`llara.metrics` (the seqrec
stage uses them too). Modules: ``matching`` (LLaRA's validity/hit rule on generated text),
``blocks`` (the metrics.json blocks per split and mode), ``aggregate`` (one method over training
seeds x candidate sets), ``engine`` (the model interface), ``run`` (generate/rank orchestration),
``seqrec_ranker`` (the seqrec backbone's per-row ranks), ``reference`` (no-LLM reference scorers:
popularity, last-item similarity), ``ranker_output`` (their shared predictions/metrics writer),
``compare`` (paired method comparisons), ``predictions`` (the predictions.parquet schema and reader, below
all of them), ``summary`` (the summary.md a run ends with),
``workflow`` (config -> rule inputs/params). Heavy imports (torch, transformers) happen only when a
model is loaded. The metric rule and the metrics.json layout: docs/metrics.md.
"""
