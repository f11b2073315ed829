"""The predictions.parquet schema every evaluation writes, and its reader.

One row per split x mode x candidate set x evaluated row (docs/interfaces.md). Written by the LLM
evaluation (``llara.evaluate.run``) and the no-LLM rankers (``llara.evaluate.ranker_output``); read by the
seed aggregation (``llara.evaluate.aggregate``) and the paired comparisons (``llara.evaluate.compare``, which
the report uses). It sits below all of them, so none of them imports another for the schema or the reader.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PREDICTIONS = pa.schema([
    pa.field("split", pa.string(), nullable=False),
    pa.field("mode", pa.string(), nullable=False),            # generate | rank
    pa.field("candidate_set", pa.int32(), nullable=False),    # index into the row's candidate_sets
    pa.field("row", pa.int64(), nullable=False),              # row index in the split's Parquet file
    pa.field("user_id", pa.int64(), nullable=False),
    pa.field("target", pa.int64(), nullable=False),
    pa.field("candidates", pa.list_(pa.int64()), nullable=False),
    pa.field("output", pa.string()),                           # generated text (generate mode; null in rank mode)
    pa.field("predicted", pa.int64()),                         # the named / top-scored candidate, null if invalid
    pa.field("valid", pa.bool_(), nullable=False),
    pa.field("correct", pa.bool_(), nullable=False),
    pa.field("valid_literal", pa.bool_(), nullable=False),     # the authors' literal substring rule
    pa.field("correct_literal", pa.bool_(), nullable=False),
    pa.field("n_named", pa.int32()),                           # candidates the output names (generate mode)
    pa.field("target_rank", pa.int32()),                       # 0-based rank of the target (rank mode)
    pa.field("scores", pa.list_(pa.float64())),                # candidate scores (rank mode)
])


def read_predictions(path: str | Path) -> pa.Table:
    """Read a predictions.parquet and check its columns."""
    t = pq.read_table(path)
    missing = [f.name for f in PREDICTIONS if f.name not in t.schema.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {PREDICTIONS.names}")
    return t.select(PREDICTIONS.names)
