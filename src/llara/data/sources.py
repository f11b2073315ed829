"""Where each dataset's raw files come from, and the pins (sha256 and size) every file is checked against.

A file's ``relpath`` is both its place under ``resources/raw/{dataset}/{source}/`` and its place in a
local mirror folder (laid out like ``../shared/datasets``). Archives are verified member by member,
since re-packed archives differ in their own sha256 but not in their members. A pinned size bounds how
many bytes are read from a download or an archive member; unpinned ones are bounded by ``MAX_BYTES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HF_LLARA = "https://huggingface.co/datasets/joyliao7777/LLaRA/resolve/main"

MAX_BYTES = 8 << 30
"""Upper bound on the bytes read from any download or archive member whose size is not pinned."""


@dataclass(frozen=True)
class Member:
    """An archive member's pins: sha256 (None = not pinnable here) and size in bytes (None = unknown)."""

    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: mirror-relative path, official URL, and its pins (None = not pinnable here)."""

    relpath: str
    url: str
    sha256: str | None = None
    members: dict[str, Member] = field(default_factory=dict)  # zip member -> its pins
    is_pickle: bool = False
    size: int | None = None  # bytes; bounds the download

    def pin_keys(self) -> tuple[str, ...]:
        """The ``download.extra_sha256`` keys that can pin this file or its members."""
        return (self.relpath, *(f"{self.relpath}/{m}" for m in self.members))


ML100K = RemoteFile(
    "ml-100k.zip",
    "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    sha256=None,  # the archive is re-packed by mirrors; its members are pinned instead
    members={
        "ml-100k/u.data": Member("06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490", 1979173),
        "ml-100k/u.item": Member("553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701", 236344),
    },
)

_LLARA_PINS = {  # relpath -> (sha256, size in bytes)
    "lastfm/train_data.df": ("7db71a60d3da4c449091fbc254efc9602f81eec6eb9a60534811ccd61974dbc1", 2462846),
    "lastfm/Val_data.df": ("92a1ddb65ebdeff999f910b65660eb3d8c7cd85e6a19308d80c429481839f8b3", 6690),
    "lastfm/Test_data.df": ("cac058a2842b2a3ed4d39ed1fa0a742f5034a23c9851a2ffc157b4845d703570", 6673),
    "lastfm/id2name.txt": ("b608bcf14300b1608ccd88f4fe240e6345125201ecdb55157395c19787fe4eaf", 85003),
    "movielens/train_data.df": (None, None),  # not mirrored: pin it with download.extra_sha256
    "movielens/Val_data.df": ("9a950900d0055649e2983ef403d189d5fdc5bd4f84d229a377806d371b32e460", 43200),
    "movielens/Test_data.df": ("d38308a0078d4518dc9eeb619c8d1afb53d830712cc7d36ac51cc47eaafc97d6", 43718),
    "steam/train_data.df": (None, None),  # not mirrored: pin it with download.extra_sha256
    "steam/Val_data.df": ("84cd6a73ffea7e64e88e0c01357e01ffc7492fac3870dcccb417939c82fc764b", 59281),
    "steam/Test_data.df": ("2766b9faf90e3531a35207c01fbef2f655af97c21a6ba7d18581bbef2bc6ad59", 59142),
    "steam/id2name.txt": ("67e7d846a6ddfb3d4d4c408efae0062e8f730471cb149578cfa0b6d5d7314f0b", 95475),
}


def _llara(dataset: str, name: str) -> RemoteFile:
    key = f"{dataset}/{name}"
    sha, size = _LLARA_PINS[key]
    return RemoteFile(f"llara/{key}", f"{HF_LLARA}/{key}", sha256=sha, is_pickle=name.endswith(".df"), size=size)


_SPLITS = ("train_data.df", "Val_data.df", "Test_data.df")

SOURCES: dict[tuple[str, str], tuple[RemoteFile, ...]] = {
    ("lastfm", "llara"): tuple(_llara("lastfm", n) for n in (*_SPLITS, "id2name.txt")),
    ("movielens", "llara"): (*(_llara("movielens", n) for n in _SPLITS), ML100K),
    ("steam", "llara"): tuple(_llara("steam", n) for n in (*_SPLITS, "id2name.txt")),
    ("movielens", "raw"): (ML100K,),
    ("lastfm", "raw"): (
        RemoteFile(
            "hetrec2011-lastfm-2k.zip",
            "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
            members={"user_taggedartists-timestamps.dat": Member(), "artists.dat": Member()},
        ),
    ),
    ("steam", "raw"): (
        RemoteFile("steam_reviews.json.gz", "https://cseweb.ucsd.edu/~wckang/steam_reviews.json.gz"),
        RemoteFile("steam_games.json.gz", "https://cseweb.ucsd.edu/~wckang/steam_games.json.gz"),
    ),
}

# Padding ids of LLaRA's released splits (the item count of each dataset).
LLARA_PADDING_ID = {"lastfm": 4606, "movielens": 1682, "steam": 3581}

# Item counts that a (dataset, source) fixes, for config checks before any job runs.
KNOWN_ITEM_COUNTS = {**{(d, "llara"): n for d, n in LLARA_PADDING_ID.items()}, ("movielens", "raw"): 1682}


def files_for(dataset: str, source: str) -> tuple[RemoteFile, ...]:
    """The files a (dataset, source) pair needs; a clear error for an unknown pair."""
    try:
        return SOURCES[(dataset, source)]
    except KeyError:
        known = ", ".join(f"{d}/{s}" for d, s in SOURCES)
        raise ValueError(f"config datasets.{dataset}.source={source!r}: unknown; known dataset/source pairs: {known}") from None


def pinnable_paths() -> set[str]:
    """Every key ``download.extra_sha256`` accepts: file relpaths and ``archive/member`` paths."""
    return {key for files in SOURCES.values() for f in files for key in f.pin_keys()}


def pins_for(dataset: str, source: str, extra_sha256: Mapping[str, str] | None) -> dict[str, str]:
    """The slice of ``download.extra_sha256`` that concerns (dataset, source)'s own files.

    Rules get only this slice as a param, so pinning one dataset's file reruns nothing of another's.
    """
    keys = {key for f in files_for(dataset, source) for key in f.pin_keys()}
    return {k: v for k, v in sorted((extra_sha256 or {}).items()) if k in keys}
