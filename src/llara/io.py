"""Atomic file output that never replaces what this project did not write; hashing; typed writers.

Every artifact is written to a temporary sibling and renamed into place, so an interrupted stage never
leaves a file that looks complete. Each folder the project writes into holds a marker file
(``.llara-output.json``) naming the files it wrote there and the stage that wrote them. An existing
output is replaced only when the marker says the same stage wrote it (or it is empty); anything else in
the way (a user's file or folder) stops the stage with :class:`OutputInTheWayError`, naming the file,
and nothing is renamed or deleted.

A stage whose outputs are several files beside other files (``preprocess``: items/train/valid/test.parquet)
writes them inside :func:`output_set`: the marker records the set as being written before the first file is
replaced, and its files' sha256 once the last one is in place. :func:`check_output_set`, which every reader
of those files calls, refuses a file of a set that is incomplete (an interrupted or failed run) or that
changed since, so a reader never mixes files of two runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MARKER = ".llara-output.json"
GENERIC = "llara"  # the stage recorded by writers that do not name one


class OutputInTheWayError(FileExistsError):
    """An output path holds data this project did not write (or another stage wrote): nothing is touched."""


class IncompleteOutputError(ValueError):
    """A file of a stage's output set that is not part of a complete, unchanged set (see :func:`output_set`)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of an in-memory byte string."""
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------- ownership markers
@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (flock on the directory itself: no lock file is left behind)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # e.g. NFS without lock support: markers are then unserialised
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_marker(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("written_by") != "llara" or not isinstance(data.get("files", {}), dict):
        return {}
    return data


def _write_marker(folder: Path, files: dict[str, str], whole_tree: str | None = None,
                  sets: dict[str, Any] | None = None) -> None:
    data: dict[str, Any] = {"written_by": "llara", "files": dict(sorted(files.items()))}
    if whole_tree:
        data["whole_tree"] = whole_tree  # a scratch folder: everything below was written by this stage
    if sets:
        data["sets"] = sets  # output sets (output_set): which files belong together, and their sha256
    fd, name = tempfile.mkstemp(prefix=f"{MARKER}.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.chmod(name, 0o644)
    os.replace(name, folder / MARKER)


def _is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _compatible(recorded: str | None, stage: str | None) -> bool:
    return recorded is not None and (stage is None or recorded in (stage, GENERIC))


def _owner(path: Path, stop: Path | None = None) -> str | None:
    """The stage that wrote ``path`` according to the nearest marker above it (up to ``stop``), or None."""
    folder, rel = path.parent, path.name
    while True:
        marker = _read_marker(folder)
        if marker.get("whole_tree"):
            return marker["whole_tree"]
        if rel in marker.get("files", {}):
            return marker["files"][rel]
        if folder == stop or folder.parent == folder:
            return None
        folder, rel = folder.parent, f"{folder.name}/{rel}"


def _in_the_way(final: Path, stage: str | None) -> Path | None:
    """The first file under ``final`` that may not be replaced by ``stage``, or None when all may."""
    if not os.path.lexists(final):
        return None
    if final.is_symlink() or not final.is_dir():
        empty = final.is_file() and not final.is_symlink() and final.stat().st_size == 0
        return None if empty or _compatible(_owner(final), stage) else final
    for root, dirs, files in os.walk(final):
        here = Path(root)
        for name in files + [d for d in dirs if (here / d).is_symlink()]:
            p = here / name
            if name == MARKER and not p.is_symlink():
                continue
            if not _compatible(_owner(p, stop=final), stage):
                return p
    return None


def _check_parents(final: Path) -> None:
    """The folders above ``final`` must be folders, or absent: a dangling symbolic link or a file there would
    only fail once the stage has done its work (when the folder is created)."""
    for anc in final.parents:
        if os.path.isdir(anc):  # follows links: a link to a folder is fine
            return
        if os.path.islink(anc) and not os.path.exists(anc):
            raise OutputInTheWayError(
                f"{anc}: a symbolic link to {os.readlink(anc)}, which does not exist (or loops); cannot write {final} "
                f"below it (create the link's target folder or choose another output path)")
        if os.path.lexists(anc):
            raise OutputInTheWayError(f"{anc}: not a folder; cannot write {final} below it "
                                      f"(move it away or choose another output path)")


def check_replaceable(path: str | os.PathLike, stage: str | None = None) -> None:
    """Raise :class:`OutputInTheWayError` unless ``path`` is absent, empty, or an output of ``stage``, and the
    folders above it are folders (or absent).

    Call it before a stage starts its work, so a refusal costs nothing; the writers below check again.
    """
    final = Path(os.path.abspath(path))
    _check_parents(final)
    bad = _in_the_way(final, stage)
    if bad is not None:
        other = _owner(bad, stop=final if final.is_dir() else None)
        why = (f"it was written by llara stage {other!r}, not {stage!r}" if other else
               "llara did not write it")
        where = f" (in {final})" if bad != final else ""
        raise OutputInTheWayError(
            f"{bad}{where}: {why}; refusing to replace or delete it (move it away or choose another output path)")


def _stage_label(stage: str | None) -> str:
    return stage or GENERIC


def _files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != MARKER)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False, stage: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    With ``directory=True`` the temporary path is an (empty) directory and the whole tree is moved.
    On error the temporary file or directory is removed and nothing appears at ``path``. An existing
    ``path`` is replaced only when it is empty or was written by ``stage`` (any llara stage when None);
    otherwise :class:`OutputInTheWayError` names what is in the way, before the block runs.
    """
    final = Path(os.path.abspath(path))
    check_replaceable(final, stage)
    final.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create owner-only files; give the result the usual umask-based mode
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod((0o777 if directory else 0o666) & ~umask)
        if directory:
            _write_marker(tmp, dict.fromkeys(_files_below(tmp), _stage_label(stage)))
        with _locked(final.parent):
            check_replaceable(final, stage)  # again: something may have appeared while the stage ran
            if not directory and not _is_temp_name(final.name):
                marker = _read_marker(final.parent)
                _write_marker(final.parent, {**marker.get("files", {}), final.name: _stage_label(stage)},
                              sets=marker.get("sets"))
            _replace(tmp, final)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _replace(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final`` (already checked replaceable); an old folder is moved aside first
    and removed only once the new one is in place."""
    if not os.path.lexists(final) or not final.is_dir() or final.is_symlink():
        if os.path.lexists(final) and tmp.is_dir():
            final.unlink()  # an empty file where a folder goes
        os.replace(tmp, final)
        return
    if not any(final.iterdir()):
        os.replace(tmp, final)  # rename(2) replaces an empty directory
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old.tmp", dir=final.parent))
    os.replace(final, old / final.name)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old / final.name, final)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------- output sets
def _sets(marker: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The marker's well-formed set records (set id -> {"stage", "state", "files": {name: sha256 | None}})."""
    sets = marker.get("sets")
    if not isinstance(sets, dict):
        return {}
    return {k: v for k, v in sets.items() if isinstance(v, dict) and isinstance(v.get("files"), dict)}


@contextlib.contextmanager
def output_set(paths: Iterable[str | os.PathLike], stage: str) -> Iterator[None]:
    """The files at ``paths``, written inside the block (by the writers above), form one set of ``stage``.

    Before the block, each folder's marker records the set as being written (a set that shared a file with
    it is marked superseded); once the block has completed, it records each file's sha256. A kill or an error
    in between leaves the record unfinished, and :func:`check_output_set` refuses every file of it. Nothing
    but the marker is written here; call it after the stage's work, right before the files are written.
    """
    set_id = uuid.uuid4().hex
    by_folder: dict[Path, list[str]] = {}
    for p in paths:
        final = Path(os.path.abspath(p))
        by_folder.setdefault(final.parent, []).append(final.name)
    for folder, names in by_folder.items():
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            marker = _read_marker(folder)
            sets = _sets(marker)
            for other_id, rec in list(sets.items()):
                if set(rec["files"]) & set(names):  # partly replaced now: the rest of it no longer belongs anywhere
                    rest = {n: h for n, h in rec["files"].items() if n not in names}
                    if rest:
                        sets[other_id] = {**rec, "state": "superseded", "files": rest}
                    else:
                        del sets[other_id]
            sets[set_id] = {"stage": stage, "state": "writing", "files": dict.fromkeys(sorted(names))}
            _write_marker(folder, marker.get("files", {}), marker.get("whole_tree"), sets)
    yield
    for folder, names in by_folder.items():
        hashes = {n: sha256_file(folder / n) for n in names}
        with _locked(folder):
            marker = _read_marker(folder)
            sets = _sets(marker)
            rec = sets.get(set_id)
            if rec is None or rec.get("state") != "writing":
                raise IncompleteOutputError(f"{folder}: another run of stage {stage!r} wrote {sorted(names)} at the "
                                            f"same time; rerun the stage")
            sets[set_id] = {**rec, "state": "complete", "files": dict(sorted(hashes.items()))}
            _write_marker(folder, marker.get("files", {}), marker.get("whole_tree"), sets)


def check_output_set(path: str | os.PathLike) -> None:
    """Refuse (:class:`IncompleteOutputError`) a file that belongs to an output set (:func:`output_set`) which is
    not complete, or whose content is not what the set recorded; other files pass unchecked."""
    p = Path(os.path.abspath(path))
    for rec in _sets(_read_marker(p.parent)).values():
        if p.name not in rec["files"]:
            continue
        stage = rec.get("stage", GENERIC)
        names = sorted(rec["files"])
        rerun = (f"rerun stage {stage} (Snakemake reruns it when its outputs are removed; "
                 f"`llara {stage}` replaces its own files)")
        if rec.get("state") == "superseded":
            raise IncompleteOutputError(
                f"{p}: part of a set of stage {stage!r} whose other files a later run replaced without it "
                f"({p.parent / MARKER}); {rerun}")
        if rec.get("state") != "complete":
            raise IncompleteOutputError(
                f"{p}: stage {stage!r} did not finish writing {', '.join(names)} (interrupted or failed; "
                f"{p.parent / MARKER} says the set is incomplete), so these files may mix two runs; {rerun}")
        found = sha256_file(p)
        if found != rec["files"][p.name]:
            raise IncompleteOutputError(
                f"{p}: changed since stage {stage!r} wrote it with {', '.join(n for n in names if n != p.name)}: "
                f"expected sha256 {rec['files'][p.name]}, found {found}; {rerun}")
        return


def remove_tree(path: str | os.PathLike, stage: str | None = None) -> None:
    """Delete a folder this project wrote (``stage``'s output or scratch folder); refuse anything else."""
    check_replaceable(path, stage)
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif os.path.lexists(p):
        p.unlink()


def make_scratch_dir(path: str | os.PathLike, stage: str) -> Path:
    """Create (or keep) a folder whose whole content belongs to ``stage`` (e.g. checkpoints);
    refuses a non-empty folder the project did not write."""
    p = Path(path)
    check_replaceable(p, stage)
    p.mkdir(parents=True, exist_ok=True)
    if _read_marker(p).get("whole_tree") != stage:
        _write_marker(p, {}, whole_tree=stage)
    return p


def write_parquet(table: pa.Table, path: str | os.PathLike, schema: pa.Schema | None = None,
                  stage: str | None = None) -> None:
    """Write ``table`` atomically, cast to ``schema`` first when one is given (fails on mismatch)."""
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    with atomic_path(path, stage=stage) as tmp:
        pq.write_table(table, tmp)


def write_json(obj: Any, path: str | os.PathLike, stage: str | None = None) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path, stage=stage) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None,
                     stage: str | None = None) -> None:
    """Save a dict of torch tensors as safetensors atomically."""
    from safetensors.torch import save_file

    with atomic_path(path, stage=stage) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
