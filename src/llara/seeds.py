"""Training seeds of a run and the folders each seed's artefacts live in (config ``seed`` / ``seeds``).

``seed`` is the data seed (splits, stored candidate sets), the bootstrap seed, and the training
seed when ``seeds`` is null. ``seeds: [42, 43, 44]`` runs every training stage (seqrec, tune,
ablations) and its evaluation once per seed; the data stage and the zero-shot evaluation (no
training) are shared. Layout (``{root}`` = ``results/{dataset}/{seqrec}``):

* one training seed: as always, ``{root}/seqrec/``, ``{root}/llara/``, ``{root}/ablations/{v}/``,
  ``{root}/predictions.parquet``, ``{root}/metrics.json``;
* several (a *sweep*): seed S's training in ``{root}/seeds/S/`` (``seqrec/``, ``llara/``,
  ``ablations/{v}/llara/``), except the data seed's, which stays where a one-seed run put it, so
  turning a run into a sweep that contains its seed retrains nothing; every seed's evaluation in
  ``{root}/seeds/S/`` (``predictions.parquet``, ``metrics.json``, ``seqrec/ranker_*``,
  ``ablations/{v}/...``); ``{root}/metrics.json`` (and ``seqrec/ranker_metrics.json``,
  ``ablations/{v}/metrics.json``) then aggregate the seeds.

Pure functions of the validated config dict (no snakemake import), used by the rules and the report.
"""

from __future__ import annotations

from typing import Any

SEEDS_DIR = "seeds"


def data_seed(config: dict[str, Any]) -> int:
    """Config ``seed``: the data stage's seed and every bootstrap's."""
    try:
        return int(config["seed"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"config key seed must be an integer, got {config.get('seed')!r}") from None


def train_seeds(config: dict[str, Any]) -> list[int]:
    """The training seeds: config ``seeds`` when set, else ``[seed]``.

    Raises ValueError naming the key when ``seeds`` is empty, repeats a seed or holds a non-integer
    (the schema checks the same; this holds for Python callers too).
    """
    seeds = config.get("seeds")
    if seeds is None:
        return [data_seed(config)]
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ValueError(f"config key seeds must be a non-empty list of integers or null, got {seeds!r}")
    # `--config 'seeds=[42,43]'` arrives as strings (Snakemake parses list values with YAML's BaseLoader)
    bad = [s for s in seeds if not (isinstance(s, int) and not isinstance(s, bool) and s >= 0)
           and not (isinstance(s, str) and s.isdigit())]
    if bad:
        raise ValueError(f"config key seeds: {bad} are not non-negative integers")
    out = [int(s) for s in seeds]
    if len(set(out)) != len(out):
        raise ValueError(f"config key seeds lists a seed twice: {out}")
    return out


def is_sweep(config: dict[str, Any]) -> bool:
    """True with more than one training seed (per-seed folders and an aggregation step)."""
    return len(train_seeds(config)) > 1


def legacy_seed(config: dict[str, Any]) -> int:
    """The training seed behind the one-seed folders: the only training seed, in a sweep the data seed."""
    return train_seeds(config)[0] if not is_sweep(config) else data_seed(config)


def method_root(dataset: str, seqrec: str) -> str:
    return f"results/{dataset}/{seqrec}"


def _check(config: dict[str, Any], seed: int | None) -> int:
    """``seed`` if it is a training seed; None: the only training seed (an error in a sweep)."""
    seeds = train_seeds(config)
    if seed is None:
        if len(seeds) > 1:
            raise ValueError(f"config seeds {seeds} holds several seeds: say which one")
        return seeds[0]
    if int(seed) not in seeds:
        raise ValueError(f"training seed {seed} is not among config seeds {seeds}")
    return int(seed)


def train_root(config: dict[str, Any], dataset: str, seqrec: str, seed: int | None = None) -> str:
    """Folder holding ``seqrec/``, ``llara/`` and ``ablations/{v}/llara/`` trained with ``seed``.

    ``seed`` None: the only training seed (an error in a sweep).
    """
    seed = _check(config, seed)
    if not is_sweep(config) or seed == data_seed(config):
        return method_root(dataset, seqrec)
    return f"{method_root(dataset, seqrec)}/{SEEDS_DIR}/{seed}"


def eval_root(config: dict[str, Any], dataset: str, seqrec: str, seed: int | None = None) -> str:
    """Folder of one seed's evaluation outputs (``predictions.parquet``, ``metrics.json``, ``seqrec/ranker_*``,
    ``ablations/{v}/``): the method folder with one training seed, ``seeds/{seed}/`` in a sweep."""
    seed = _check(config, seed)
    return f"{method_root(dataset, seqrec)}/{SEEDS_DIR}/{seed}" if is_sweep(config) else method_root(dataset, seqrec)


def wildcard_seed(config: dict[str, Any], wildcards: Any) -> int:
    """The training seed of a job: its ``{seed}`` wildcard, else the one-seed folders' seed."""
    s = wildcards.get("seed") if hasattr(wildcards, "get") else None
    return int(s) if s is not None else legacy_seed(config)
