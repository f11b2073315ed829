"""Explicit pyarrow schemas of the data-stage tables, and a reader that checks them."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from llara.io import check_output_set

ITEMS = pa.schema([
    pa.field("item_id", pa.int64(), nullable=False),
    pa.field("title", pa.string(), nullable=False),
    pa.field("source_id", pa.string(), nullable=False),  # the id in the raw source, for traceability
])

TRAIN = pa.schema([
    pa.field("user_id", pa.int64(), nullable=False),
    pa.field("history", pa.list_(pa.int64()), nullable=False),  # oldest first, no padding
    pa.field("target", pa.int64(), nullable=False),
])

EVAL = pa.schema([
    *TRAIN,
    pa.field("candidates", pa.list_(pa.int64()), nullable=False),  # == candidate_sets[0]
    pa.field("candidate_sets", pa.list_(pa.list_(pa.int64())), nullable=False),  # K x n_candidates
])

SPLIT_SCHEMAS = {"train": TRAIN, "valid": EVAL, "test": EVAL}


def read_table(path: str | os.PathLike, schema: pa.Schema) -> pa.Table:
    """Read a Parquet table and check that it has ``schema``'s columns and types and at least one row.

    A file the data stage wrote is read only as part of a complete set (``llara.io.check_output_set``): never
    a file of an interrupted run next to files of an earlier one."""
    check_output_set(path)
    table = pq.read_table(path)
    missing = [f.name for f in schema if f.name not in table.schema.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected columns {schema.names}")
    table = table.select(schema.names)
    for f in schema:
        got = table.schema.field(f.name).type
        if got != f.type:
            raise ValueError(f"{path}: column {f.name!r} has type {got}, expected {f.type}")
    if table.num_rows == 0:
        raise ValueError(f"{path}: the table is empty; expected at least one row")
    return table
