# Shared helpers for all rules: wildcard constraints, mirror resolution, config slices.
import os
import re

from llara.data import datasets as dsets
from llara.data.sources import pins_for
from llara.settings import SLUG

# every configured dataset: the built-in ones and any `source: interactions` dataset (docs/own-data.md);
# each entry was checked by validate_config (Snakefile), before any job runs
DATASETS = list(config["datasets"])


# Every name that becomes a path is a safe slug (one path component, never '.', '..' or hidden):
# the schema's $defs/slug, the same regex here, so no wildcard can reach outside its folder.
wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASETS),
    variant=SLUG,
    name=SLUG,


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


def source_pins(dataset, source):
    """Only (dataset, source)'s own slice of download.extra_sha256: pinning another file reruns nothing here."""
    return pins_for(dataset, source, config["download"]["extra_sha256"])


def preprocess_pins(dataset):
    """The extra pins a dataset's preprocess job reads: a built-in source's own slice of
    download.extra_sha256; none for an own dataset (its pins are datasets.<name>.sha256)."""
    source = dataset_entry(dataset)["source"]
    return {} if source == "interactions" else source_pins(dataset, source)
