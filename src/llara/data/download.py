"""Fetch raw files from the official hosts or a local mirror, verify their sha256 pins, place them atomically."""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

from llara.data.sources import RemoteFile, files_for
from llara.io import atomic_path, sha256_bytes, sha256_file

log = logging.getLogger("llara.data.download")


class ChecksumError(ValueError):
    """A file or archive member whose sha256 differs from its pin."""


def _fetch(f: RemoteFile, mirror: str | Path | None, dest: Path, timeout: float) -> str:
    """Copy from the mirror or download from the URL into ``dest``; return where it came from."""
    if mirror is not None:
        src = Path(mirror) / f.relpath
        if not src.is_file():
            raise FileNotFoundError(f"mirror {mirror}: {f.relpath} is missing (expected the layout of ../shared/datasets)")
        shutil.copyfile(src, dest)
        return str(src)
    try:
        with urllib.request.urlopen(f.url, timeout=timeout) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise ConnectionError(f"could not download {f.url}: {e}; for offline runs set download.mirror or LLARA_MIRROR") from e
    return f.url


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
                bad = zf.testzip()
                if bad is not None:
                    raise ChecksumError(f"{name}: zip member {bad} is corrupt (CRC check failed)")
                names = set(zf.namelist())
                for member, member_pin in f.members.items():
                    key = f"{f.relpath}/{member}"
                    member_pin = extra.get(key, member_pin)
                    if member not in names:
                        raise ChecksumError(f"{name}: archive lacks member {member}")
                    got = sha256_bytes(zf.read(member))
                    if member_pin is None:
                        log.warning("%s: member %s has no pinned sha256; found %s (pin it as %r in download.extra_sha256)",
                                    name, member, got, key)
                    elif got != member_pin:
                        raise ChecksumError(f"{name}: member {member}: sha256 mismatch: expected {member_pin}, found {got}")
        except zipfile.BadZipFile as e:
            raise ChecksumError(f"{name}: not a valid zip archive (truncated or corrupt): {e}") from e


def download_dataset(dataset: str, source: str, out_dir: str | Path, mirror: str | Path | None = None,
                     extra_sha256: Mapping[str, str] | None = None, timeout: float = 60.0) -> list[Path]:
    """Fetch and verify every file of (dataset, source) into ``out_dir`` (created atomically as a whole)."""
    files = files_for(dataset, source)
    with atomic_path(out_dir, directory=True) as tmp:
        for f in files:
            dest = tmp / f.relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            origin = _fetch(f, mirror, dest, timeout)
            verify(dest, f, extra_sha256, origin)
            log.info("verified %s (from %s)", f.relpath, origin)
    return [Path(out_dir) / f.relpath for f in files]
