"""Read LLaRA's pickled pandas DataFrames without running the pickle: pinned sha256 first, then a reader
that interprets the pickle's opcodes itself and calls nothing the file names.

Unpickling runs code: ``pickle.load`` calls whatever callables a file names, and even an allow-list of
pandas/numpy/pyarrow reconstructors lets a file hand raw buffers to native code (a pinned pickle that
used only allow-listed pyarrow functions crashed the interpreter). Here the opcodes are parsed by
:func:`pickletools.genops` (pure Python) and run on a small stack machine whose "globals" are inert
markers: a call only records its arguments. The recorded tree is then decoded with explicit checks
into plain Python columns; numeric blocks become arrays only after their byte counts match their
shapes. Only the globals that LLaRA's released splits use are accepted (pandas 1-3 spellings).

A bad file fails with :class:`UnsafePickleError` (a global or opcode outside that set) or
:class:`PickleFormatError` (anything else), naming the file and, for values, the row and column.
"""

from __future__ import annotations

import math
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llara.errors import PickleFormatError, UnsafePickleError  # below every stage; importable from here as before
from llara.io import sha256_bytes
from llara.text import short_repr


# global (module, name) -> role; pandas >= 3 and numpy >= 2 spell some modules differently
_ROLES = {
    ("pandas.core.frame", "DataFrame"): "DataFrame",
    ("pandas", "DataFrame"): "DataFrame",
    ("pandas.core.internals.managers", "BlockManager"): "BlockManager",
    ("pandas._libs.internals", "_unpickle_block"): "block",
    ("pandas.core.indexes.base", "_new_Index"): "new_index",
    ("pandas.core.indexes.base", "Index"): "Index",
    ("pandas", "Index"): "Index",
    ("pandas.core.indexes.range", "RangeIndex"): "RangeIndex",
    ("pandas", "RangeIndex"): "RangeIndex",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("builtins", "slice"): "slice",
}

_DTYPES = {f"{k}{n}" for k in "iu" for n in (1, 2, 4, 8)} | {"f4", "f8", "b1"}  # plus object: O8 / O4


@dataclass(frozen=True)
class _Global:
    role: str
    qualname: str


class _Call:
    """What a REDUCE/NEWOBJ of an allowed global would have built: recorded, never executed."""

    __slots__ = ("fn", "args", "state")

    def __init__(self, fn: _Global, args: tuple):
        self.fn, self.args, self.state = fn, args, None

    @property
    def role(self) -> str:
        return self.fn.role


_PUSH_ARG = {"NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
             "FLOAT", "BINFLOAT", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES",
             "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def _interpret(data: bytes, name: str) -> Any:
    """Run the pickle's opcodes on an inert stack machine; return the (recorded) top-level object."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def resolve(module: Any, qual: Any) -> _Global:
        if not isinstance(module, str) or not isinstance(qual, str):
            raise PickleFormatError("a global's module and name must be strings")
        role = _ROLES.get((module, qual))
        if role is None:
            raise UnsafePickleError(f"refuses to load global {module}.{qual}; only the pandas/numpy "
                                    "pieces of a DataFrame of ints, lists and tuples are read")
        return _Global(role, f"{module}.{qual}")

    pos = 0
    try:
        for op, arg, pos in pickletools.genops(data):
            n = op.name
            if n in _CONST:
                stack.append(_CONST[n])
            elif n in _PUSH_ARG:
                stack.append(arg)
            elif n in ("PROTO", "FRAME"):
                continue
            elif n == "MARK":
                marks.append(len(stack))
            elif n == "EMPTY_TUPLE":
                stack.append(())
            elif n in ("TUPLE1", "TUPLE2", "TUPLE3"):
                k = int(n[-1])
                if len(stack) < k:
                    raise IndexError("stack underflow")
                items = tuple(stack[-k:])
                del stack[-k:]
                stack.append(items)
            elif n == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif n == "EMPTY_LIST":
                stack.append([])
            elif n == "LIST":
                stack.append(pop_mark())
            elif n in ("APPEND", "APPENDS"):
                items = [stack.pop()] if n == "APPEND" else pop_mark()
                target = stack[-1]
                if type(target) is not list:
                    raise PickleFormatError(f"{n} on a {type(target).__name__}")
                target.extend(items)
            elif n == "EMPTY_DICT":
                stack.append({})
            elif n in ("DICT", "SETITEMS", "SETITEM"):
                items = stack[-2:] if n == "SETITEM" else pop_mark()
                if n == "SETITEM":
                    if len(items) < 2:
                        raise IndexError("stack underflow")
                    del stack[-2:]
                if len(items) % 2:
                    raise PickleFormatError(f"{n} with an odd number of items")
                target = {} if n == "DICT" else stack[-1]
                if type(target) is not dict:
                    raise PickleFormatError(f"{n} on a {type(target).__name__}")
                for i in range(0, len(items), 2):
                    target[items[i]] = items[i + 1]
                if n == "DICT":
                    stack.append(target)
            elif n in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if n == "MEMOIZE" else arg] = stack[-1]
            elif n in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif n == "POP":
                stack.pop()
            elif n == "POP_MARK":
                pop_mark()
            elif n == "DUP":
                stack.append(stack[-1])
            elif n == "GLOBAL":
                module, _, qual = str(arg).partition(" ")
                stack.append(resolve(module, qual))
            elif n == "STACK_GLOBAL":
                qual, module = stack.pop(), stack.pop()
                stack.append(resolve(module, qual))
            elif n in ("REDUCE", "NEWOBJ"):
                args, fn = stack.pop(), stack.pop()
                if not isinstance(fn, _Global) or type(args) is not tuple:
                    raise PickleFormatError(f"{n} needs an allowed global and an argument tuple")
                stack.append(_Call(fn, args))
            elif n == "BUILD":
                state, target = stack.pop(), stack[-1]
                if not isinstance(target, _Call) or target.state is not None:
                    raise PickleFormatError("BUILD on something that is not a fresh pandas/numpy object")
                target.state = state
            elif n == "STOP":
                if len(stack) != 1 or marks:
                    raise PickleFormatError("STOP with an unbalanced stack")
                return stack[0]
            else:
                raise UnsafePickleError(f"opcode {n} is not used by LLaRA's pickles; refusing it")
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e} (byte {pos})") from None
    except PickleFormatError as e:
        raise PickleFormatError(f"{name}: not a DataFrame pickle: {e} (byte {pos})") from None
    except (IndexError, KeyError, TypeError, ValueError, RecursionError, MemoryError, OverflowError) as e:
        raise PickleFormatError(f"{name}: not a readable pickle at byte {pos}: {type(e).__name__}: {e}") from None
    raise PickleFormatError(f"{name}: the pickle has no STOP opcode (truncated)")


# ----------------------------------------------------------------------------------- decoding the tree
class _Decoder:
    """Turns the recorded tree into plain columns, checking every shape, size and type on the way."""

    def __init__(self, name: str, budget: int):
        self.name = name
        self.budget = budget  # plain values that may still be produced (guards against shared-reference blow-up)

    def fail(self, what: str) -> PickleFormatError:
        return PickleFormatError(f"{self.name}: {what}")

    def expect(self, obj: Any, role: str, n_args: int | tuple[int, ...] | None = None) -> _Call:
        if not isinstance(obj, _Call) or obj.role != role:
            raise self.fail(f"expected {role}, found {_describe(obj)}")
        counts = (n_args,) if isinstance(n_args, int) else n_args
        if counts is not None and len(obj.args) not in counts:
            raise self.fail(f"{obj.fn.qualname} with {len(obj.args)} arguments")
        return obj

    def spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise self.fail("decodes to more values than the file holds bytes (shared references?); refusing it")

    # numpy ------------------------------------------------------------------------------------------
    def dtype(self, obj: Any) -> np.dtype:
        call = self.expect(obj, "dtype", 3)
        code = call.args[0]
        state = call.state
        if not isinstance(code, str) or not (code in _DTYPES or code in ("O8", "O4")):
            raise self.fail(f"numpy dtype {short_repr(code)} is not read (ints, floats, bools, objects only)")
        if not isinstance(state, tuple) or len(state) < 8 or state[0] not in (3, 4) or \
                state[1] not in ("<", ">", "|", "=") or any(s is not None for s in state[2:5]):
            raise self.fail(f"numpy dtype {short_repr(code)} with an unexpected state (structured dtypes are not read)")
        if code.startswith("O"):
            return np.dtype(object)
        return np.dtype(code if state[1] in ("|", "=") else state[1] + code)

    def shape(self, obj: Any) -> tuple[int, ...]:
        if type(obj) is not tuple or not 1 <= len(obj) <= 2 or any(type(d) is not int or not 0 <= d < 2 ** 63 for d in obj):
            raise self.fail(f"array shape {short_repr(obj)} (expected one or two non-negative 64-bit ints)")
        return obj

    def numeric(self, buf: Any, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
        if not isinstance(buf, (bytes, bytearray)):
            raise self.fail(f"array data is a {type(buf).__name__}, expected bytes")
        size = math.prod(shape)  # exact (Python ints): a lying shape cannot wrap around
        if size * dtype.itemsize != len(buf):
            raise self.fail(f"array of shape {shape} and dtype {dtype} needs {size * dtype.itemsize} bytes, "
                            f"the file holds {len(buf)}")
        self.spend(size)
        return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order="F" if fortran else "C")

    def array(self, obj: Any) -> np.ndarray:
        """An ndarray pickle (``_reconstruct`` + state, or protocol 5's ``_frombuffer``) as a numpy array;
        object arrays hold the recorded elements, still to be decoded by :meth:`plain`."""
        if isinstance(obj, _Call) and obj.role == "frombuffer":
            call = self.expect(obj, "frombuffer", 4)
            buf, dtype, shape, order = call.args
            dtype = self.dtype(dtype)
            if dtype == object or order not in ("C", "F"):
                raise self.fail("_frombuffer of an object array or with an unknown order")
            return self.numeric(buf, dtype, self.shape(shape), order == "F")
        call = self.expect(obj, "reconstruct", 3)
        if not isinstance(call.args[0], _Global) or call.args[0].role != "ndarray":
            raise self.fail("_reconstruct of something other than numpy.ndarray")
        state = call.state
        if type(state) is not tuple or len(state) != 5 or state[0] != 1 or type(state[3]) is not bool:
            raise self.fail("ndarray with an unexpected state")
        _, shape, dtype, fortran, data = state
        shape, dtype = self.shape(shape), self.dtype(dtype)
        if dtype != object:
            return self.numeric(data, dtype, shape, fortran)
        size = math.prod(shape)
        if type(data) is not list or len(data) != size:
            raise self.fail(f"object array of shape {shape} holds {len(data) if type(data) is list else short_repr(data)} items")
        self.spend(size)
        out = np.empty(size, dtype=object)
        for i, v in enumerate(data):
            out[i] = v
        return out.reshape(shape, order="F" if fortran else "C")

    def scalar(self, obj: _Call) -> int | float | bool:
        call = self.expect(obj, "scalar", 2)
        dtype, raw = self.dtype(call.args[0]), call.args[1]
        if dtype == object or not isinstance(raw, (bytes, bytearray)) or len(raw) != dtype.itemsize:
            raise self.fail(f"numpy scalar of dtype {dtype} with {len(raw) if isinstance(raw, (bytes, bytearray)) else short_repr(raw)} bytes")
        return np.frombuffer(bytes(raw), dtype=dtype)[0].item()

    def plain(self, v: Any, depth: int = 0) -> Any:
        """A cell value as plain Python: numbers, strings, None, and lists/tuples of them (depth <= 2)."""
        self.spend(1)
        if v is None or type(v) in (int, float, bool, str):
            return v
        if isinstance(v, _Call) and v.role == "scalar":
            return self.scalar(v)
        if type(v) in (list, tuple) and depth < 2:
            return type(v)(self.plain(x, depth + 1) for x in v)
        raise self.fail(f"a cell holds {_describe(v)}; only numbers, strings and lists/tuples of them are read")

    # pandas -----------------------------------------------------------------------------------------
    def index(self, obj: Any) -> list[Any] | int:
        """An Index as its labels, or a RangeIndex as its length."""
        call = self.expect(obj, "new_index", 2)
        cls, d = call.args
        if not isinstance(cls, _Global) or cls.role not in ("Index", "RangeIndex") or type(d) is not dict:
            raise self.fail(f"index of type {_describe(cls)}")
        if cls.role == "RangeIndex":
            start, stop, step = d.get("start"), d.get("stop"), d.get("step")
            if any(type(x) is not int for x in (start, stop, step)) or step == 0:
                raise self.fail(f"RangeIndex{short_repr((start, stop, step))}")
            return len(range(start, stop, step))
        values = self.array(d.get("data"))
        if values.ndim != 1:
            raise self.fail("a multi-dimensional Index")
        return [self.plain(v) for v in values.tolist()]

    def frame(self, obj: Any) -> tuple[dict[Any, list[Any]], int]:
        if not isinstance(obj, _Call) or obj.role != "DataFrame":
            raise self.fail(f"expected a pickled pandas DataFrame, found {_describe(obj)}")
        if obj.args != () or type(obj.state) is not dict or "_mgr" not in obj.state:
            raise self.fail("a DataFrame without its block manager (an older pandas layout?)")
        mgr = self.expect(obj.state["_mgr"], "BlockManager", (2, 3))
        blocks, axes = mgr.args[0], mgr.args[1]
        if type(blocks) not in (tuple, list) or type(axes) is not list or len(axes) != 2:
            raise self.fail("a block manager without 2 axes and a block list")
        columns, n_rows = self.index(axes[0]), self.index(axes[1])
        n_rows = n_rows if isinstance(n_rows, int) else len(n_rows)
        if isinstance(columns, int):
            columns = list(range(columns))
        if len(set(map(repr, columns))) != len(columns):
            raise self.fail(f"duplicate column labels {short_repr(columns)}")
        cells: list[list[Any] | None] = [None] * len(columns)
        for b in blocks:
            call = self.expect(b, "block", 3)
            values, placement, ndim = call.args
            arr = self.array(values)
            positions = self.placement(placement, len(columns))
            if ndim != 2 or arr.ndim != 2 or arr.shape != (len(positions), n_rows):
                raise self.fail(f"a block of shape {arr.shape} for {len(positions)} columns x {n_rows} rows")
            for j, p in enumerate(positions):
                if cells[p] is not None:
                    raise self.fail(f"column {short_repr(columns[p])} is stored twice")
                values = arr[j].tolist()
                cells[p] = [self.plain(v) for v in values] if arr.dtype == object else values
        missing = [c for c, v in zip(columns, cells) if v is None]
        if missing:
            raise self.fail(f"column(s) {short_repr(missing)} have no data")
        return dict(zip(columns, cells)), n_rows

    def placement(self, obj: Any, n_cols: int) -> list[int]:
        """The column positions of a block: a ``slice(start, stop, step)`` or an int array."""
        if isinstance(obj, _Call) and obj.role == "slice":
            args = obj.args
            if len(args) != 3 or any(x is not None and (type(x) is not int or x < 0) for x in args) or args[2] == 0:
                raise self.fail(f"block placement slice{short_repr(args)}")
            return list(range(n_cols)[slice(*args)])  # a slice past the columns is caught by the shape check
        arr = self.array(obj)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise self.fail("block placement is not a list of column positions")
        positions = arr.tolist()
        if any(not 0 <= p < n_cols for p in positions):
            raise self.fail(f"block placement {short_repr(positions)} outside the {n_cols} columns")
        return positions


def _describe(obj: Any) -> str:
    if isinstance(obj, _Call):
        return f"a {obj.fn.qualname}(...) object"
    if isinstance(obj, _Global):
        return obj.qualname
    return f"a {type(obj).__name__}"


# ---------------------------------------------------------------------------------------------- API
def _read_pinned(path: str | Path, expected_sha256: str) -> bytes:
    data = Path(path).read_bytes()
    found = sha256_bytes(data)
    if found != expected_sha256:
        raise ValueError(f"{path}: sha256 mismatch: expected {expected_sha256}, found {found}; refusing to unpickle")
    return data


def read_frame(path: str | Path, expected_sha256: str) -> tuple[dict[Any, list[Any]], int]:
    """The columns (label -> list of plain values) and row count of the DataFrame pickled at ``path``,
    after checking its sha256 against the pin. Never runs code from the file."""
    data = _read_pinned(path, expected_sha256)
    tree = _interpret(data, str(path))
    try:
        return _Decoder(str(path), budget=4 * len(data) + 1024).frame(tree)
    except PickleFormatError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, RecursionError, MemoryError, OverflowError) as e:
        raise PickleFormatError(f"{path}: not a DataFrame of the expected layout: {type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class LlaraSplit:
    """One of LLaRA's released splits, checked: per row the item ids of ``seq`` (padding included),
    ``len_seq`` (how many are real) and the target ``next``."""

    seq: list[list[int]]
    len_seq: list[int]
    next: list[int]


COLUMNS = ("seq", "len_seq", "next")


def load_llara_split(path: str | Path, expected_sha256: str) -> LlaraSplit:
    """Read and check a released split: columns seq/len_seq/next, integer ids (MovieLens stores
    ``(item, rating)`` tuples: the item is kept), 0 <= len_seq <= len(seq). Errors name file, row, column."""
    columns, n_rows = read_frame(path, expected_sha256)
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise PickleFormatError(f"{path}: missing column(s) {missing}; expected columns {list(COLUMNS)}, "
                                f"found {short_repr(list(columns))}")

    def bad(r: int, col: str, what: str, value: Any) -> PickleFormatError:
        return PickleFormatError(f"{path}, row {r}, column {col!r}: expected {what}, found {short_repr(value)}")

    def item(r: int, col: str, v: Any) -> int:
        if type(v) is tuple and v:
            v = v[0]
        if type(v) is not int:
            raise bad(r, col, "an integer item id (or an (item, rating) tuple)", v)
        if not -2 ** 63 <= v < 2 ** 63:
            raise bad(r, col, "an item id that fits in 64 bits", v)
        return v

    seqs, lens, nexts = [], [], []
    for r, (seq, n, nxt) in enumerate(zip(columns["seq"], columns["len_seq"], columns["next"])):
        if type(seq) not in (list, tuple):
            raise bad(r, "seq", "a list of item ids", seq)
        ids = [item(r, "seq", x) for x in seq]
        if type(n) is not int or not 0 <= n <= len(ids):
            raise bad(r, "len_seq", f"an integer from 0 to len(seq) = {len(ids)}", n)
        seqs.append(ids)
        lens.append(n)
        nexts.append(item(r, "next", nxt))
    if len(seqs) != n_rows:
        raise PickleFormatError(f"{path}: {len(seqs)} rows decoded, the index has {n_rows}")
    return LlaraSplit(seqs, lens, nexts)


__all__ = ["UnsafePickleError", "PickleFormatError", "read_frame", "LlaraSplit", "load_llara_split"]
