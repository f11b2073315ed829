"""Fetch raw files from the official hosts or a local mirror, verify their sha256 pins, place them atomically."""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from llara.data.sources import MAX_BYTES, RemoteFile, files_for
from llara.errors import ChecksumError  # defined below every stage; importable from here as before
from llara.io import atomic_path, sha256_file
from llara.settings import check_settings

log = logging.getLogger("llara.data.download")


CHUNK = 1 << 20


def _copy_bounded(src: BinaryIO, dest: BinaryIO, limit: int, name: str) -> int:
    """Copy ``src`` to ``dest`` in chunks; fail once more than ``limit`` bytes arrive."""
    n = 0
    while block := src.read(min(CHUNK, limit + 1 - n)):
        n += len(block)
        if n > limit:
            raise ChecksumError(f"{name}: larger than {limit} bytes (its pinned size or llara.data.sources.MAX_BYTES)")
        dest.write(block)
    return n


def _fetch(f: RemoteFile, mirror: str | Path | None, dest: Path, timeout: float, limit: int) -> str:
    """Copy from the mirror or download from the URL into ``dest`` (at most ``limit`` bytes); return
    where it came from."""
    if mirror is not None:
        src = Path(mirror) / f.relpath
        if not src.is_file():
            raise FileNotFoundError(f"mirror {mirror}: {f.relpath} is missing (expected the layout of ../shared/datasets)")
        with open(src, "rb") as i, open(dest, "wb") as o:
            _copy_bounded(i, o, limit, str(src))
        return str(src)
    try:
        with urllib.request.urlopen(f.url, timeout=timeout) as resp, open(dest, "wb") as out:
            _copy_bounded(resp, out, limit, f.url)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise ConnectionError(f"could not download {f.url}: {e}; for offline runs set download.mirror or LLARA_MIRROR") from e
    return f.url


def member_sha256(zf: zipfile.ZipFile, member: str, size: int | None, name: str) -> str:
    """sha256 of an archive member, hashed in streamed chunks; its size must match the pin (when pinned)
    and the archive's own record, and never exceed MAX_BYTES."""
    info = zf.getinfo(member)
    if size is not None and info.file_size != size:
        raise ChecksumError(f"{name}: member {member} is {info.file_size} bytes, its pin says {size}")
    limit = min(info.file_size, MAX_BYTES)
    h = hashlib.sha256()
    n = 0
    with zf.open(info) as src:
        while block := src.read(min(CHUNK, limit + 1 - n)):
            n += len(block)
            if n > limit:
                raise ChecksumError(f"{name}: member {member} expands beyond {limit} bytes")
            h.update(block)
    if n != info.file_size:
        raise ChecksumError(f"{name}: member {member} holds {n} bytes, the archive says {info.file_size}")
    return h.hexdigest()


def verify(path: Path, f: RemoteFile, extra_sha256: Mapping[str, str] | None = None, origin: str | None = None) -> None:
    """Check a fetched file (and its archive members) against the pins; raise ChecksumError naming it."""
    extra = dict(extra_sha256 or {})
    name = origin or f.relpath
    pin = extra.get(f.relpath, f.sha256)
    found = sha256_file(path)
    if pin is not None and found != pin:
        raise ChecksumError(f"{name}: sha256 mismatch: expected {pin}, found {found}")
    if pin is None:
        if f.is_pickle:
            raise ChecksumError(
                f"{name}: no sha256 is pinned for this pickle and pickles run code when loaded; "
                f"check the file, then pin it with config download.extra_sha256: {{{f.relpath!r}: <sha256>}} (found {found})")
        if not f.members:
            log.warning("%s: no pinned sha256; found %s (pin it with download.extra_sha256)", name, found)
    if f.members:
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                for member, member_pin in f.members.items():
                    key = f"{f.relpath}/{member}"
                    expected = extra.get(key, member_pin.sha256)
                    if member not in names:
                        raise ChecksumError(f"{name}: archive lacks member {member}")
                    # a user pin replaces the repository's, size included
                    size = member_pin.size if key not in extra else None
                    got = member_sha256(zf, member, size, name)
                    if expected is None:
                        log.warning("%s: member %s has no pinned sha256; found %s (pin it as %r in download.extra_sha256)",
                                    name, member, got, key)
                    elif got != expected:
                        raise ChecksumError(f"{name}: member {member}: sha256 mismatch: expected {expected}, found {got}")
        except zipfile.BadZipFile as e:
            raise ChecksumError(f"{name}: not a valid zip archive (truncated or corrupt): {e}") from e
        except (zlib.error, EOFError) as e:
            raise ChecksumError(f"{name}: a zip member is corrupt: {e}") from e


def download_dataset(dataset: str, source: str, out_dir: str | Path, mirror: str | Path | None = None,
                     extra_sha256: Mapping[str, str] | None = None, timeout: float = 60.0) -> list[Path]:
    """Fetch and verify every file of (dataset, source) into ``out_dir`` (created atomically as a whole).

    ``out_dir`` must be absent, empty or an earlier download; anything else stops the call before any
    fetch (:class:`llara.io.OutputInTheWayError`), and nothing there is replaced or deleted.
    """
    files = files_for(dataset, source)
    if extra_sha256:
        check_settings({"download": {"extra_sha256": dict(extra_sha256)}})
    with atomic_path(out_dir, directory=True, stage="download") as tmp:
        for f in files:
            dest = tmp / f.relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            # the repository's size pin bounds the transfer, unless the user pinned another file
            limit = f.size if f.size is not None and f.relpath not in (extra_sha256 or {}) else MAX_BYTES
            origin = _fetch(f, mirror, dest, timeout, limit)
            verify(dest, f, extra_sha256, origin)
            log.info("verified %s (from %s)", f.relpath, origin)
    return [Path(out_dir) / f.relpath for f in files]
