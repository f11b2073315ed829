"""Evaluation: ranking metrics, the official generation metric, bootstrap intervals.

Modules: ``ranking`` (HR@k, NDCG@k, bootstrap_ci), ``matching`` (LLaRA's validity/hit rule on
generated text), ``stats`` (ratio bootstraps over candidate sets, paired differences), ``metrics``
(the metrics.json blocks), ``engine`` (the model interface), ``run`` (generate/rank orchestration),
``seqrec_ranker`` (the seqrec backbone's per-row ranks), ``compare`` (paired method comparisons),
``workflow`` (config -> rule inputs/params). Heavy imports (torch, transformers) happen only when a
model is loaded. The metric rule and the metrics.json layout: docs/metrics.md.
"""
