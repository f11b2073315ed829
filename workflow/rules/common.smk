# Shared helpers for all rules: wildcard constraints, mirror resolution, config slices.
import os
import re

from llara.data import datasets as dsets

# every configured dataset: the built-in ones and any `source: interactions` dataset (docs/own-data.md);
# each entry is checked here, before any job runs
dsets.check_datasets(config["datasets"])
DATASETS = list(config["datasets"])


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASETS),


ENV = "../envs/llara.yaml"  # conda environment of every rule (rule files sit beside envs/)


def mirror():
    """The local mirror folder (env LLARA_MIRROR wins over config download.mirror), or None."""
    path = os.environ.get("LLARA_MIRROR") or config["download"].get("mirror")
    return os.path.abspath(path) if path else None


def dataset_entry(dataset):
    """The config entry datasets.<dataset>; fails naming the key if absent."""
    try:
        return config["datasets"][dataset]
    except KeyError:
        raise ValueError(f"config key datasets.{dataset} is missing: add the dataset to config['datasets']")
