"""Model names -> classes, and each model's default hyper-parameters (the config's ``seqrec.<name>``).

The defaults here are the same as in ``config/config.yaml`` and the config schema (a test checks it),
so the package can be used without Snakemake. They were chosen on LastFM's valid split: lr 3e-3
converges in 5-15 epochs (1e-3 needs twice as many), dropout 0.5 keeps SASRec from overfitting
after its first epochs (0.2 peaked early, then fell). GRU4Rec's valid HR@1 is the noisiest and still
rose late: it gets more epochs and patience (an epoch costs it less than half of SASRec's).
"""

from __future__ import annotations

import copy
from typing import Any

from llara.seqrec.base import SeqRecModel
from llara.seqrec.caser import Caser
from llara.seqrec.gru4rec import GRU4Rec
from llara.seqrec.sasrec import SASRec
from llara.settings import ConfigError, check_settings

MODELS: dict[str, type[SeqRecModel]] = {"sasrec": SASRec, "gru4rec": GRU4Rec, "caser": Caser}

# Keys used by the training loop; every other key is a constructor argument of the model.
TRAIN_KEYS = ("lr", "weight_decay", "batch_size", "max_epochs", "patience")

_TRAIN_DEFAULTS = {"lr": 3e-3, "weight_decay": 0.0, "batch_size": 256, "max_epochs": 20, "patience": 5}

DEFAULTS: dict[str, dict[str, Any]] = {
    "sasrec": {"hidden_size": 64, "max_len": 10, "dropout": 0.5, "n_layers": 2, "n_heads": 1, **_TRAIN_DEFAULTS},
    "gru4rec": {"hidden_size": 64, "max_len": 10, "dropout": 0.3, "n_layers": 1,
                **_TRAIN_DEFAULTS, "max_epochs": 30, "patience": 8},
    "caser": {"hidden_size": 64, "max_len": 10, "dropout": 0.5, "n_h": 16, "n_v": 4, **_TRAIN_DEFAULTS},
}


def model_class(name: str) -> type[SeqRecModel]:
    """The class registered under ``name``; an unknown name fails naming the config key."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError("seqrec", f"unknown sequential recommender {name!r} (wildcard {{seqrec}} / config key "
                                    f"seqrec.{name}); expected one of {sorted(MODELS)}") from None


def resolve_hparams(name: str, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """``hparams`` over the model's defaults, checked by the config schema and its cross-key rules
    (llara.settings: types, bounds, n_heads dividing hidden_size); a bad key or value fails naming
    ``seqrec.<name>.<key>``."""
    model_class(name)
    merged = {**DEFAULTS[name], **copy.deepcopy(dict(hparams or {}))}
    check_settings({"seqrec": {name: merged}})
    return merged


def build_model(name: str, n_items: int, hparams: dict[str, Any] | None = None) -> SeqRecModel:
    """A freshly initialised model (seed torch first for a reproducible initialisation)."""
    merged = resolve_hparams(name, hparams)
    arch = {k: v for k, v in merged.items() if k not in TRAIN_KEYS}
    return model_class(name)(n_items, **arch)
