# Shared helpers for all rules: wildcard constraints, mirror resolution, config slices.
import os

from llara.data.sources import pins_for
from llara.settings import SLUG

DATASETS = ["lastfm", "movielens", "steam"]


# Every name that becomes a path is a safe slug (one path component, never '.', '..' or hidden):
# the schema's $defs/slug, the same regex here, so no wildcard can reach outside its folder.
wildcard_constraints:
    dataset="|".join(DATASETS),
    variant=SLUG,
    name=SLUG,


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


def source_pins(dataset, source):
    """Only (dataset, source)'s own slice of download.extra_sha256: pinning another file reruns nothing here."""
    return pins_for(dataset, source, config["download"]["extra_sha256"])
