"""Load LLaRA's pickled pandas DataFrames safely: pinned sha256 first, then a restricted unpickler.

Unpickling can run arbitrary code. The unpickler below resolves only the handful of pandas/numpy
globals that a DataFrame of ints, lists and tuples needs, so even a file whose sha256 a user pinned
cannot call ``os.system`` or anything else.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from llara.io import sha256_bytes

_ALLOWED = {
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.series", "Series"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "slice"),
    ("builtins", "bytearray"),
    # what pandas >= 3 writes for the same DataFrame (string columns are Arrow-backed)
    ("pandas", "DataFrame"),
    ("pandas", "Index"),
    ("pandas", "RangeIndex"),
    ("pandas", "StringDtype"),
    ("pandas.arrays", "ArrowStringArray"),
    ("pyarrow.lib", "_restore_array"),
    ("pyarrow.lib", "type_for_alias"),
    ("pyarrow.lib", "py_buffer"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the DataFrame allow-list."""


class _DataFrameUnpickler(pickle.Unpickler):
    def __init__(self, file, name: str):
        super().__init__(file)
        self._name = name

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"{self._name}: refuses to load global {module}.{name}; only a pandas DataFrame of ints/lists/tuples is allowed")
        import importlib

        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core." + module[len("numpy.core."):]
        return getattr(importlib.import_module(module), name)


def load_dataframe(path: str | Path, expected_sha256: str):
    """Return the pandas DataFrame pickled at ``path`` after checking its sha256 against the pin."""
    data = Path(path).read_bytes()
    found = sha256_bytes(data)
    if found != expected_sha256:
        raise ValueError(f"{path}: sha256 mismatch: expected {expected_sha256}, found {found}; refusing to unpickle")
    return _DataFrameUnpickler(io.BytesIO(data), str(path)).load()
