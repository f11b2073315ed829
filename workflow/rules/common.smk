# Shared helpers for all rules: wildcard constraints, mirror resolution, config slices.
import os

DATASETS = ["lastfm", "movielens", "steam"]


wildcard_constraints:
    dataset="|".join(DATASETS),


ENV = "../envs/llara.yaml"  # conda environment of every rule (rule files sit beside envs/)


def mirror():
    """The local mirror folder (env LLARA_MIRROR wins over config download.mirror), or None."""
    path = os.environ.get("LLARA_MIRROR") or config["download"].get("mirror")
    return os.path.abspath(path) if path else None


def dataset_source(dataset):
    """The configured source (llara | raw) of a dataset; fails naming the key if absent."""
    try:
        return config["datasets"][dataset]["source"]
    except KeyError:
        raise ValueError(f"config key datasets.{dataset}.source is missing: add the dataset to config['datasets']")
