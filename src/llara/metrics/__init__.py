"""Ranking metrics and bootstrap intervals shared by every stage that scores rankings.

Lives below the seqrec and evaluation stages (both use it): ``ranking`` (target ranks, HR@k,
NDCG@k), ``bootstrap`` (seeded row bootstraps of means and of ratios of sums over candidate sets
or seeds x sets, paired differences). Pure numpy, no stage imports.
"""
