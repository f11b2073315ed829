"""Sequential recommenders (SASRec, GRU4Rec, Caser): training, evaluation as rankers, embedding export.

Entry point of the stage: :func:`run_seqrec`. Models share :class:`SeqRecModel`'s interface:
``encode(histories) -> user states``, ``score_all`` / ``score`` by dot product with the item table.
"""

from llara.seqrec.base import SeqRecModel, left_align, right_align
from llara.seqrec.caser import Caser
from llara.seqrec.data import Split, load_n_items, load_split
from llara.seqrec.gru4rec import GRU4Rec
from llara.seqrec.registry import DEFAULTS, MODELS, build_model, model_class, resolve_hparams
from llara.seqrec.sasrec import SASRec
from llara.seqrec.schema import item_embeddings_schema, item_embeddings_table, read_item_embeddings
from llara.seqrec.train import candidate_scores, fit, load_model, ranking_report, run_seqrec, save_model, split_ranks

__all__ = [
    "Caser", "DEFAULTS", "GRU4Rec", "MODELS", "SASRec", "SeqRecModel", "Split", "build_model", "candidate_scores",
    "fit", "item_embeddings_schema", "item_embeddings_table", "left_align", "load_model", "load_n_items",
    "load_split", "model_class", "ranking_report", "read_item_embeddings", "resolve_hparams", "right_align",
    "run_seqrec", "save_model", "split_ranks",
]
