"""Provenance block attached to every metrics.json: what produced the numbers."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from llara.io import sha256_file

_PACKAGES = ("llara", "torch", "transformers", "peft", "deepspeed", "polars", "pyarrow", "numpy", "snakemake")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the results."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit(start: str | Path = ".") -> str | None:
    """The git commit of the working tree (with ``-dirty`` when modified), or None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=start, capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def input_hashes(paths: dict[str, str | Path] | list[str | Path]) -> dict[str, str]:
    """sha256 of each input file (directories are skipped: name their files instead)."""
    items = paths.items() if isinstance(paths, dict) else ((str(p), p) for p in paths)
    return {str(k): sha256_file(p) for k, p in items if Path(p).is_file()}


def provenance(config: dict[str, Any], inputs: dict[str, str | Path] | list[str | Path], seed: int | None,
               device: str = "cpu", wall_time_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance block: config slice, input sha256s, versions, git commit, seed, device, wall time."""
    return {
        "config": config,
        "inputs_sha256": input_hashes(inputs),
        "versions": package_versions(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "seed": seed,
        "device": device,
        "wall_time_s": None if wall_time_s is None else round(wall_time_s, 3),
        **extra,
    }
