"""The pyarrow schema of ``item_embeddings.parquet`` and its reader."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def item_embeddings_schema(dim: int) -> pa.Schema:
    """``item_id`` int64, ``embedding`` fixed_size_list<float32>[dim]; one row per item, no padding row."""
    return pa.schema([
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
    ])


def item_embeddings_table(embeddings: np.ndarray) -> pa.Table:
    """An ``[n_items, d]`` float array -> the item-embeddings table (item ids 0..n_items-1)."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = emb.shape
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim)
    return pa.Table.from_arrays([pa.array(np.arange(n, dtype=np.int64)), column], schema=item_embeddings_schema(dim))


def read_item_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read ``item_embeddings.parquet`` -> (item_id ``[n]`` int64, embedding ``[n, d]`` float32), checked."""
    table = pq.read_table(path)
    if table.schema.names[:2] != ["item_id", "embedding"]:
        raise ValueError(f"{path}: expected columns ['item_id', 'embedding'], found {table.schema.names}")
    emb_type = table.schema.field("embedding").type
    if not (pa.types.is_fixed_size_list(emb_type) and emb_type.value_type == pa.float32()):
        raise ValueError(f"{path}: column 'embedding' has type {emb_type}, expected fixed_size_list<float32>[d]")
    if table.schema.field("item_id").type != pa.int64():
        raise ValueError(f"{path}: column 'item_id' has type {table.schema.field('item_id').type}, expected int64")
    if table.num_rows == 0:
        raise ValueError(f"{path}: the table is empty; expected one row per item")
    ids = table.column("item_id").to_numpy()
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, flat.reshape(table.num_rows, emb_type.list_size)
