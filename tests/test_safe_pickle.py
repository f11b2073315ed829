"""The pickle reader never runs the pickle: hostile but pinned files fail with a Python exception naming
the file (and row/column for values), never by crashing the interpreter or running code."""

from __future__ import annotations

import io
import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED

from llara.data.safe_pickle import PickleFormatError, UnsafePickleError, load_llara_split, read_frame
from llara.io import sha256_file

ERRORS = (UnsafePickleError, PickleFormatError)
MIRROR_PICKLES = sorted((SHARED / "datasets" / "llara").glob("*/*.df"))


# ------------------------------------------------------------------------------- a pickle "assembler"
class R:
    """Pickles as ``fn(*args)`` (then ``__setstate__(state)``) without ever calling ``fn``."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _np(name):
    import numpy._core.multiarray as ma
    import numpy._core.numeric as nu

    return {"_reconstruct": ma._reconstruct, "_frombuffer": nu._frombuffer, "scalar": ma.scalar}[name]


def obj_array(values, shape):
    return R(_np("_reconstruct"), (np.ndarray, (0,), b"b"), (1, shape, np.dtype(object), False, list(values)))


def int_array(values, shape, raw=None):
    data = np.asarray(values, dtype="<i8").tobytes() if raw is None else raw
    return R(_np("_frombuffer"), (bytearray(data), np.dtype("<i8"), shape, "C"))


def index(labels):
    from pandas.core.indexes.base import _new_Index

    return R(_new_Index, (pd.Index, {"data": obj_array(labels, (len(labels),)), "name": None}))


def range_index(n):
    from pandas.core.indexes.base import _new_Index

    return R(_new_Index, (pd.RangeIndex, {"name": None, "start": 0, "stop": n, "step": 1}))


def frame(seq, len_seq, nxt, *, columns=("seq", "len_seq", "next"), blocks=None, rows=None):
    """A DataFrame pickle in the layout of LLaRA's released splits: one object block (seq, next) and one
    int64 block (len_seq); ``blocks``/``rows`` replace parts to make it lie."""
    from pandas._libs.internals import _unpickle_block
    from pandas.core.internals.managers import BlockManager

    n = len(seq)
    if blocks is None:
        blocks = (R(_unpickle_block, (obj_array([*seq, *nxt], (2, n)), slice(0, 3, 2), 2)),
                  R(_unpickle_block, (int_array(len_seq, (1, n)), slice(1, 2, 1), 2)))
    mgr = R(BlockManager, (tuple(blocks), [index(list(columns)), range_index(n if rows is None else rows)]))
    state = {"_mgr": mgr, "_typ": "dataframe", "_metadata": [], "attrs": {}, "_flags": {"allows_duplicate_labels": True}}
    return R(pd.DataFrame, (), state)  # pandas writes NEWOBJ; REDUCE with no args reads the same


def write(tmp_path: Path, obj, name="train_data.df", protocol=5) -> Path:
    p = tmp_path / name
    p.write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=protocol))
    return p


def load(p: Path):
    return load_llara_split(p, sha256_file(p))


GOOD = dict(seq=[[1, 2, 3, 9], [4, 5, 9, 9]], len_seq=[3, 2], nxt=[4, 6])


# --------------------------------------------------------------------------------------- honest files
@pytest.mark.skipif(not MIRROR_PICKLES, reason="../shared/datasets absent")
@pytest.mark.parametrize("path", MIRROR_PICKLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_released_pickle_reads_as_pandas_does(path):
    """Every pickle of the mirror decodes to exactly what pandas.read_pickle gives (they are pinned)."""
    columns, n = read_frame(path, sha256_file(path))
    ref = pd.read_pickle(path)
    assert n == len(ref) and list(columns) == list(ref.columns)
    assert sorted(columns) == ["len_seq", "next", "seq"]

    def plain(x):
        return type(x)(plain(y) for y in x) if isinstance(x, (list, tuple)) else (x.item() if hasattr(x, "item") else x)

    for c in columns:
        assert columns[c] == [plain(x) for x in ref[c].tolist()]
    split = load(path)
    assert len(split.seq) == n and all(0 <= k <= len(s) for s, k in zip(split.seq, split.len_seq))
    assert all(type(i) is int for s in split.seq[:50] for i in s)


def test_assembled_frame_is_what_pandas_reads(tmp_path):
    """The test assembler writes the released layout: pandas reads it, and so does the reader."""
    p = write(tmp_path, frame(**GOOD))
    ref = pd.read_pickle(p)
    assert ref["seq"].tolist() == GOOD["seq"] and ref["len_seq"].tolist() == GOOD["len_seq"]
    split = load(p)
    assert (split.seq, split.len_seq, split.next) == (GOOD["seq"], GOOD["len_seq"], GOOD["nxt"])
    # pandas' own pickle of such a frame (object labels, as released) reads the same
    df = pd.DataFrame({"seq": GOOD["seq"], "len_seq": GOOD["len_seq"], "next": GOOD["nxt"]})
    df.columns = pd.Index(list(df.columns), dtype=object)
    for proto in (4, 5):
        q = write(tmp_path, pickle.dumps(df, protocol=proto), f"p{proto}.df")
        assert load(q).seq == GOOD["seq"]


def test_movielens_item_rating_tuples_keep_the_item(tmp_path):
    scalar = _np("scalar")

    def np_int(v):
        return R(scalar, (np.dtype("<i8"), np.int64(v).tobytes()))

    seq = [[(np_int(5), np_int(4)), (np_int(7), np_int(3))]]
    p = write(tmp_path, frame(seq, [2], [(np_int(8), np_int(5))]))
    split = load(p)
    assert split.seq == [[5, 7]] and split.next == [8]


# ------------------------------------------------------------------------------------ hostile globals
class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fn,args", [
    (os.system, ("touch {marker}",)),
    (eval, ("open({marker!r}, 'w')",)),
    (__import__, ("os",)),
    (subprocess.call, (["touch", "{marker}"],)),
])
def test_globals_outside_the_frame_are_refused(tmp_path, fn, args):
    marker = tmp_path / "pwned"
    args = tuple(a.format(marker=marker) if isinstance(a, str) else
                 [x.format(marker=marker) for x in a] if isinstance(a, list) else a for a in args)
    for obj in (R(fn, args), frame(**GOOD, columns=("seq", "len_seq", R(fn, args)))):
        p = write(tmp_path, obj)
        with pytest.raises(UnsafePickleError, match=r"train_data\.df: refuses to load global"):
            load(p)  # the file is pinned (its own sha256), and still refused
        assert not marker.exists()


def test_allow_listed_reconstructors_are_never_called(tmp_path):
    """A pinned pickle that hands pyarrow raw buffers crashed the old loader with SIGSEGV; the reader
    runs in a child process here so that a crash fails the test instead of killing pytest."""
    pa = pytest.importorskip("pyarrow")
    df = pd.DataFrame({"seq": [[1, 2, 3]], "len_seq": [3], "next": [4]})

    class Lying(pickle.Pickler):  # string labels whose Arrow offsets point far past their data
        def reducer_override(self, obj):
            if isinstance(obj, pa.Array):
                fn, (state,) = obj.__reduce__()
                state = list(state)
                bufs = list(state[4])
                bufs[1] = pa.py_buffer(np.array([0, 1 << 40, 1 << 41, 1 << 42], dtype=np.int64).tobytes())
                state[4] = bufs
                return fn, (tuple(state),)
            return NotImplemented

    buf = io.BytesIO()
    Lying(buf, protocol=5).dump(df)
    p = write(tmp_path, buf.getvalue())
    code = textwrap.dedent(f"""
        from llara.data.preprocess import llara_rows, DataConfig
        from llara.io import sha256_file
        p = {str(p)!r}
        try:
            llara_rows(p, sha256_file(p), 4606, 4606, DataConfig())
        except Exception as e:
            print("EXC", type(e).__name__, e)
        else:
            print("LOADED")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"the interpreter died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    assert "EXC UnsafePickleError" in proc.stdout and "refuses to load global" in proc.stdout, proc.stdout


# ------------------------------------------------------------------------------------- hostile opcodes
def _raw(*ops: bytes) -> bytes:
    return b"\x80\x04" + b"".join(ops) + b"."


@pytest.mark.parametrize("name,data", [
    ("persistent id", _raw(b"\x8c\x01x", b"Q")),                       # BINPERSID
    ("extension", _raw(b"\x82\x01")),                                  # EXT1
    ("inst", b"(ios\nsystem\n."),                                      # INST (protocol 0)
    ("obj", _raw(b"(", b"\x8c\x02os\x8c\x06system\x93", b"o")),       # OBJ with a refused global
    ("out-of-band buffer", b"\x80\x05\x97."),                           # NEXT_BUFFER
    ("set", _raw(b"\x8f", b"(K\x01\x90")),                              # EMPTY_SET + ADDITEMS
])
def test_opcodes_the_frames_never_use_are_refused(tmp_path, name, data):
    with pytest.raises(ERRORS, match=r"train_data\.df"):
        load(write(tmp_path, data))


@pytest.mark.parametrize("name,data", [
    ("empty", b""),
    ("no STOP", b"\x80\x04K\x01"),
    ("stack underflow", _raw(b"\x85")),                                 # TUPLE1 on an empty stack
    ("unbalanced mark", _raw(b"(K\x01")),
    ("memo miss", _raw(b"h\x07")),                                      # BINGET 7 of nothing
    ("append to int", _raw(b"K\x01K\x02a")),
    ("setitem on list", _raw(b"]K\x01K\x02s")),
    ("unhashable key", _raw(b"}]K\x01s")),
    ("reduce a string", _raw(b"\x8c\x01x)R")),
    ("build an int", _raw(b"K\x01}b")),
    ("huge bytes length", b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b"ab."),
    ("bad utf-8", b"\x80\x04\x8c\x02\xff\xfe."),
])
def test_malformed_streams_fail_with_a_python_error(tmp_path, name, data):
    with pytest.raises(ERRORS, match=r"train_data\.df"):
        load(write(tmp_path, data))


def test_every_truncation_and_many_mutations_fail_cleanly(tmp_path):
    """A class test: every prefix of a valid file, and 400 seeded byte mutations, either read as a
    checked split or fail with the reader's own exceptions."""
    good = pickle.dumps(frame(**GOOD), protocol=5)
    for cut in range(len(good)):
        with pytest.raises(ERRORS):
            load(write(tmp_path, good[:cut]))
    rng = random.Random(0)
    outcomes = set()
    for _ in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            split = load(write(tmp_path, bytes(data)))
        except ERRORS:
            outcomes.add("refused")
        else:
            outcomes.add("read")
            assert all(type(i) is int for s in split.seq for i in s)
    assert "refused" in outcomes


# ------------------------------------------------------------------------------ numpy and pandas lies
def _block(values, placement):
    from pandas._libs.internals import _unpickle_block

    return R(_unpickle_block, (values, placement, 2))


@pytest.mark.parametrize("name,obj,match", [
    ("int buffer shorter than its shape", frame(**GOOD, blocks=(
        _block(obj_array([*GOOD["seq"], *GOOD["nxt"]], (2, 2)), slice(0, 3, 2)),
        _block(int_array(None, (1, 2), raw=b"\x01" * 8), slice(1, 2, 1)))), "needs 16 bytes"),
    ("int buffer with a huge shape", frame(**GOOD, blocks=(
        _block(obj_array([*GOOD["seq"], *GOOD["nxt"]], (2, 2)), slice(0, 3, 2)),
        _block(int_array([3, 2], (1, 1 << 60)), slice(1, 2, 1)))), "needs"),
    ("object array with fewer items than its shape", frame(**GOOD, blocks=(
        _block(obj_array([GOOD["seq"][0]], (2, 2)), slice(0, 3, 2)),
        _block(int_array(GOOD["len_seq"], (1, 2)), slice(1, 2, 1)))), "holds 1 items"),
    ("placement past the columns", frame(**GOOD, blocks=(
        _block(obj_array([*GOOD["seq"], *GOOD["nxt"]], (2, 2)), slice(0, 3, 2)),
        _block(int_array(GOOD["len_seq"], (1, 2)), slice(7, 8, 1)))), "block of shape"),
    ("placement array out of range", frame(**GOOD, blocks=(
        _block(obj_array([*GOOD["seq"], *GOOD["nxt"]], (2, 2)), slice(0, 3, 2)),
        _block(int_array(GOOD["len_seq"], (1, 2)), int_array([1 << 40], (1,))))), "outside the 3 columns"),
    ("a column stored twice", frame(**GOOD, blocks=(
        _block(obj_array([*GOOD["seq"], *GOOD["nxt"]], (2, 2)), slice(0, 3, 2)),
        _block(int_array(GOOD["len_seq"], (1, 2)), slice(0, 1, 1)))), "stored twice"),
    ("a column without data", frame(**GOOD, blocks=(
        _block(obj_array([*GOOD["seq"], *GOOD["nxt"]], (2, 2)), slice(0, 3, 2)),)), "have no data"),
    ("index longer than the blocks", frame(**GOOD, rows=10**9), "block of shape"),
    ("structured dtype", frame(**GOOD, blocks=(
        _block(obj_array([*GOOD["seq"], *GOOD["nxt"]], (2, 2)), slice(0, 3, 2)),
        _block(R(_np("_frombuffer"), (bytearray(32), np.dtype([("a", "<i8"), ("b", "<i8")]), (1, 2), "C")),
               slice(1, 2, 1)))), "dtype"),
    ("not a frame: a list", [1, 2, 3], "expected a pickled pandas DataFrame, found a list"),
    ("not a frame: an Index", index(["seq"]), "expected a pickled pandas DataFrame"),
])
def test_lying_structures_are_refused(tmp_path, name, obj, match):
    with pytest.raises(PickleFormatError, match=match):
        load(write(tmp_path, obj))


def test_shared_references_cannot_blow_up(tmp_path):
    """Every row pointing at one long list would decode to rows x length values from a small file."""
    long = list(range(20000))
    n = 2000
    p = write(tmp_path, frame([long] * n, [5] * n, [1] * n))
    assert p.stat().st_size < 200_000
    with pytest.raises(PickleFormatError, match="more values than the file holds bytes"):
        load(p)


def test_self_reference_fails_without_recursing_forever(tmp_path):
    loop: list = []
    loop.append(loop)
    with pytest.raises(PickleFormatError, match=r"row 0, column 'seq'|cell holds"):
        load(write(tmp_path, frame([loop, [1]], [1, 1], [1, 2])))


# ------------------------------------------------------------------------------------- value checks
@pytest.mark.parametrize("change,match", [
    ({"seq": [[1, "abc", 3], [4]]}, r"row 0, column 'seq': expected an integer item id .*found 'abc'"),
    ({"seq": [[1, 2.5, 3], [4]]}, r"row 0, column 'seq': .* found 2\.5"),
    ({"seq": [[1, 2, 3], [None]]}, r"row 1, column 'seq': .* found None"),
    ({"seq": [[1, True], [4]]}, r"row 0, column 'seq': .* found True"),
    ({"seq": [[1, 2, 3], "4,5"]}, r"row 1, column 'seq': expected a list of item ids, found '4,5'"),
    ({"seq": [[1, 2, 3], [(), 5]]}, r"row 1, column 'seq'"),
    ({"len_seq": [3, 7]}, r"row 1, column 'len_seq': expected an integer from 0 to len\(seq\) = 2, found 7"),
    ({"len_seq": [-1, 1]}, r"row 0, column 'len_seq'"),
    ({"nxt": [4, "x"]}, r"row 1, column 'next': .* found 'x'"),
])
def test_bad_values_name_file_row_and_column(tmp_path, change, match):
    args = {"seq": [[1, 2, 3], [4, 5]], "len_seq": [3, 2], "nxt": [4, 6]} | change
    with pytest.raises(PickleFormatError, match=r"train_data\.df, " + match):
        load(write(tmp_path, frame(**args)))


def test_missing_column_and_unpinned_file(tmp_path):
    p = write(tmp_path, frame(**GOOD, columns=("seq", "len_seq", "target")))
    with pytest.raises(PickleFormatError, match=r"missing column\(s\) \['next'\]"):
        load(p)
    with pytest.raises(ValueError, match="sha256 mismatch.*refusing to unpickle"):
        load_llara_split(p, "0" * 64)
