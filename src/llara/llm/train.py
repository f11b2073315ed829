"""LLaRA tuning: curriculum LoRA + projector training under DeepSpeed ZeRO, with checkpoint/resume.

CLI (no Snakemake needed)::

    python -m llara.llm.train --config-json '{"dataset": "lastfm", ...}' \\
        --base resources/llm/smollm2-135m-instruct --items results/lastfm/data/items.parquet \\
        --train results/lastfm/data/train.parquet \\
        --embeddings results/lastfm/sasrec/seqrec/item_embeddings.parquet \\
        --out-dir results/lastfm/sasrec/llara --ckpt-dir results/lastfm/sasrec/llara_ckpt

Launching (``llara.llm.launch``): DeepSpeed is the one training path. Without a launcher (no ``RANK`` in
the environment) the command starts itself: one process on CPU (``DS_ACCELERATOR=cpu``, gloo) or on one
GPU, ``torch.distributed.run`` with one process per GPU when there are several (``--nproc`` overrides), and
across nodes (``--nnodes``; under SLURM ``srun`` + torchrun's c10d rendezvous). Under
``torchrun``/``deepspeed`` it just runs as the given rank.

The loop (``llara.llm.batches``): each step's samples are tokenised once, grouped by length into
micro-batches and prefetched by a background thread; the loss is the mean over the step's answer tokens, so
the micro-batch size (``auto`` picks it) does not change the updates. LoRA dropout draws four variates per
random number on CPU (``llara.llm.dropout``).

Resume: every ``checkpoint_every`` steps a DeepSpeed checkpoint (trainable parameters, optimizer and
scheduler states, the log so far) is written to ``--ckpt-dir`` (a kept location outside the rule's
outputs); a restarted run with the same fingerprint (config + inputs) resumes from its latest tag, and
every batch, candidate draw and dropout mask is a function of (seed, step), so it reaches the same
final adapter as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llara.llm.launch import _cuda_count, add_launch_arguments, check_launch, launch_if_needed
from llara.llm.probe import PROBE_COLUMNS

log = logging.getLogger("llara.llm.train")

LOG_COLUMNS = ["step", "loss", "lr", "hybrid_share", "tokens_per_s", "epoch", "tokens", "answer_tokens", "step_s",
               # diagnostics (docs/interfaces.md): loss per answer token of the non-text / text samples, loss of the
               # first answer token, gradient L2 norms before the update, mean injected-vector / token-embedding norms
               "loss_hybrid", "loss_text", "first_token_loss", "grad_norm_lora", "grad_norm_projector",
               "inject_norm", "token_emb_norm",
               # rank 0's real / padded tokens (length-grouped micro-batches, llara.llm.batches)
               "pad_ratio"]


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])


@dataclass
class TuneConfig:
    """The ``tune`` config slice (plus ``seed``, ``dataset`` and ``prompt_format``) one training run needs."""

    dataset: str = "lastfm"
    seed: int = 42
    representation: str = "hybrid"        # hybrid | text | id: the representation the curriculum moves to
    curriculum: str = "linear"            # linear (p = tau/T) | epoch_reset (the authors' released code) | none | hybrid_only
    prompt_format: str = "auto"           # auto | raw | chat
    answer_format: str = "bare"           # chat answers: bare (title + eos) | spaced (" " + title + eos)
    projector_scale: str = "free"         # free (the authors' MLP) | token_norm (outputs at the token-embedding norm)
    token_position: str = "after"         # hybrid items: after ("title [CansEmb]", the authors') | before ("[CansEmb] title")
    n_candidates: int = 20
    max_train_samples: int | None = 384
    epochs: int = 1
    max_steps: int | None = None
    micro_batch_size: int | str = "auto"  # or a number (auto_micro_batch)
    effective_batch_size: int = 16
    lr: float = 7e-4
    projector_lr: float | None = None     # the projector's peak lr (same schedule); None: lr, as the authors
    min_lr: float = 7e-6
    warmup_start_lr: float = 7e-6
    warmup_ratio: float = 0.05
    weight_decay: float = 1e-5
    lora: LoraSettings = field(default_factory=LoraSettings)
    precision: str = "auto"               # auto: bf16 where the hardware has native bf16, else fp32
    deepspeed_config: str = "config/deepspeed/zero2.json"
    checkpoint_every: int = 5
    keep_checkpoints: int = 1
    gradient_checkpointing: bool = False
    probe_every: int = 0                  # optimizer steps between valid-row probes (probe.csv); 0: off
    probe_rows: int = 64                  # first rows of valid.parquet the probe scores (stored set 0)

    def __post_init__(self) -> None:
        self.check()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TuneConfig":
        """A TuneConfig from a resolved ``tune`` slice (``llara.llm.workflow.tune_settings``); unknown keys and
        values the config schema refuses raise, naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"tune: unknown key(s) {unknown}; known: {sorted(names)}")
        d = dict(d)
        if isinstance(d.get("lora"), dict):
            lnames = {f.name for f in dataclasses.fields(LoraSettings)}
            bad = sorted(set(d["lora"]) - lnames)
            if bad:
                raise ValueError(f"tune.lora: unknown key(s) {bad}; known: {sorted(lnames)}")
            d["lora"] = LoraSettings(**d["lora"])
        return cls(**d)

    def check(self) -> None:
        """Refuse what a Snakemake run would: the config schema and its cross-key rules (``llara.settings``),
        so a TuneConfig built in Python, from the CLI or from the Snakefile's config is checked alike."""
        from llara.settings import check_settings

        d = self.to_dict()
        extra = {k: d.pop(k) for k in ("dataset", "seed", "prompt_format")}
        checked = check_settings({"tune": d, "seed": extra["seed"], "llm": {"prompt_format": extra["prompt_format"]}})
        # whole-number floats (epochs=2.0) come back as the integers the checked settings hold
        for k, v in [*checked["tune"].items(), ("seed", checked["seed"])]:
            if type(v) is int and type(getattr(self, k, None)) is float:
                setattr(self, k, v)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TunePaths:
    base: str
    items: str
    train: str
    embeddings: str
    out_dir: str
    ckpt_dir: str
    templates: str | None = None
    valid: str | None = None              # valid.parquet: the probe's rows (needed when probe_every > 0)


# ---------------------------------------------------------------------------------------------
# preflight: every input checked before any model is loaded
# ---------------------------------------------------------------------------------------------

def load_deepspeed_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a DeepSpeed JSON config; fail naming the file on a missing file or bad JSON."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"tune.deepspeed_config: {p} does not exist")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"tune.deepspeed_config: {p} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"tune.deepspeed_config: {p} must hold a JSON object, found {type(cfg).__name__}")
    stage = (cfg.get("zero_optimization") or {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"tune.deepspeed_config: {p}: zero_optimization.stage must be 0-3, found {stage!r}")
    return cfg


def build_ds_config(base: dict[str, Any], cfg: TuneConfig, world: int) -> dict[str, Any]:
    """The DeepSpeed config of this run: the file's settings + batch sizes and precision from the tune config."""
    if not isinstance(cfg.micro_batch_size, int):
        raise ValueError(f"tune.micro_batch_size={cfg.micro_batch_size!r}: resolve 'auto' (auto_micro_batch) first")
    per_step = cfg.micro_batch_size * world
    if cfg.effective_batch_size % per_step:
        raise ValueError(f"tune.effective_batch_size={cfg.effective_batch_size} is not a multiple of "
                         f"micro_batch_size x processes = {cfg.micro_batch_size} x {world}")
    ds = json.loads(json.dumps(base))
    ds["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    ds["gradient_accumulation_steps"] = cfg.effective_batch_size // per_step
    ds["train_batch_size"] = cfg.effective_batch_size
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": cfg.precision == "bf16"}
    ds["fp16"] = {**ds.get("fp16", {}), "enabled": cfg.precision == "fp16"}
    ds.setdefault("zero_allow_untested_optimizer", True)
    ds.setdefault("steps_per_print", 10 ** 9)
    ds.pop("optimizer", None)      # torch Adam is passed in (no fused-Adam JIT build on CPU)
    ds.pop("scheduler", None)      # LLaRA's warm-up + cosine schedule is passed in
    return ds


@dataclass
class Prepared:
    titles: list[str]
    item_table: Any
    rows: Any
    templates: list[str]
    ds_base: dict[str, Any]
    probe_rows: list[dict] | None = None


def preflight(cfg: TuneConfig, paths: TunePaths) -> Prepared:
    """Check and load every input; raises a clear error naming the file or key before training starts."""
    from llara.llm.base import check_model_dir
    from llara.llm.data import load_item_embeddings, load_titles, load_train_rows
    from llara.llm.prompts import load_templates

    check_model_dir(paths.base, key="base model (llm.name -> resources/llm/{name})")
    ds_base = load_deepspeed_config(cfg.deepspeed_config)
    templates = load_templates(cfg.dataset, paths.templates)
    titles = load_titles(paths.items)
    table = load_item_embeddings(paths.embeddings, len(titles))
    rows = load_train_rows(paths.train, len(titles), cfg.max_train_samples, cfg.seed)
    probe_rows = None
    if cfg.probe_every:
        if not paths.valid:
            raise ValueError("tune.probe_every > 0 needs the valid split (--valid results/{dataset}/data/valid.parquet)")
        from llara.llm.probe import load_probe_rows

        probe_rows = load_probe_rows(paths.valid, cfg.probe_rows, len(titles))
    return Prepared(titles, table, rows, templates, ds_base, probe_rows)


def fingerprint(cfg: TuneConfig, paths: TunePaths) -> str:
    """Hash of everything that determines the run (config, input contents, base model identity)."""
    from llara.io import sha256_file
    from llara.llm.prompts import default_templates_path

    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for p in (paths.items, paths.train, paths.embeddings, paths.templates or default_templates_path(),
              cfg.deepspeed_config, *([paths.valid] if cfg.probe_every else [])):
        h.update(sha256_file(p).encode())
    base = Path(paths.base)
    for f in sorted(base.iterdir()):
        if f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
            if f.suffix == ".json" or f.name.endswith(".jinja"):
                h.update(f.read_bytes())
    return h.hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# launching
# ---------------------------------------------------------------------------------------------

def stale_build_locks(max_age_s: float = 600.0) -> list[tuple[Path, float]]:
    """(lock file, age in s) of torch extension builds (DeepSpeed JIT-builds its ops there on first use,
    ~1.5 min) older than ``max_age_s``: left by a build that was killed, they make every later run wait forever."""
    import torch.utils.cpp_extension as cpp

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp.get_default_build_root())
    now, stale = time.time(), []
    for p in sorted(root.glob("*/*/lock")):
        try:
            age = now - p.stat().st_mtime
        except OSError:  # gone meanwhile: a build just finished
            continue
        if age > max_age_s:
            stale.append((p, age))
    return stale


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------

def _atomic_text(path: Path, text: str) -> None:
    from llara.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in columns})
    return buf.getvalue()


def _micro_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}:{micro}:{rank}".encode()).digest()[:7], "little")


def build_module(base, cfg: TuneConfig, item_table, special_first_id: int):
    """LlaraLM over ``base``: a fresh seeded LoRA adapter, a seeded projector, the frozen item table."""
    import numpy as np
    import torch

    from llara.llm.dropout import pack_lora_dropout
    from llara.llm.model import LlaraLM, add_lora, init_projector

    if cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False
    torch.manual_seed(cfg.seed)
    lm = add_lora(base, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
    pack_lora_dropout(lm)  # CPU: 4 dropout variates per random draw (llara.llm.dropout), CUDA: unchanged
    projector = init_projector(item_table.shape[1], base.get_input_embeddings(), cfg.seed, cfg.projector_scale)
    table = torch.from_numpy(item_table) if isinstance(item_table, np.ndarray) else item_table
    return LlaraLM(lm, projector, table, special_first_id)


def auto_micro_batch(module, enc, sched, cfg: TuneConfig, world: int, on_gpu: bool, local_rank: int = 0) -> int:
    """``micro_batch_size: auto``: on a CPU the largest of 8, 4, 2, 1 dividing the per-process batch (8 measured
    fastest per token on 2 cores; at most 4 under 16 GiB of RAM); on a GPU the largest power of two whose forward + backward over the first
    steps' longest prompt stays under 85% of the card (``llara.llm.batches.gpu_fits``). Every rank probes
    its own card; the smallest choice wins, so all ranks agree."""
    from llara.llm.batches import choose_micro_batch, cpu_micro_batch_cap, gpu_fits

    if not on_gpu:
        return choose_micro_batch(cfg.effective_batch_size, world, lambda m: True, cap=cpu_micro_batch_cap())
    import torch
    import torch.distributed as dist

    samples = [s for step in range(1, min(sched.total_steps, 4) + 1) for s in sched.step_samples(step)]
    mb = choose_micro_batch(cfg.effective_batch_size, world, gpu_fits(module, enc, samples, f"cuda:{local_rank}"))
    if world > 1:
        t = torch.tensor([mb], device=f"cuda:{local_rank}")
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        mb = int(t.item())
    return mb


def build_engine(module, cfg: TuneConfig, ds_cfg: dict[str, Any], total_steps: int):
    """The DeepSpeed engine over ``module`` with the authors' optimizer and schedule; returns (engine, optimizer).

    Adam with coupled L2 decay on the projector only (LoRA: none); the projector's group is the second
    one, frozen by :func:`train_step` on steps without a behavioural token (the authors'
    ``requires_grad=False`` on text-only batches). Warm-up then cosine, per optimizer step; the
    projector's group peaks at ``cfg.projector_lr`` (default ``cfg.lr``) and follows the same curve,
    scaled (the LambdaLR factor multiplies each group's own peak).
    """
    import torch

    import deepspeed

    from llara.llm.data import lr_at
    from llara.llm.optim import GroupFreezingAdam

    lora_params = [p for n, p in module.named_parameters() if p.requires_grad and not n.startswith("projector.")]
    proj_params = list(module.projector.parameters())
    opt = GroupFreezingAdam([{"params": lora_params, "weight_decay": 0.0},
                             {"params": proj_params, "weight_decay": cfg.weight_decay,
                              "lr": cfg.projector_lr or cfg.lr}], lr=cfg.lr)
    warmup = int(total_steps * cfg.warmup_ratio)  # LLaRA: max_step // 20
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_at(s, total_steps, cfg.lr, cfg.min_lr, cfg.warmup_start_lr, warmup) / cfg.lr)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=opt, lr_scheduler=scheduler, config=ds_cfg)
    return engine, opt


def train_step(engine, opt, batches, seed: int, step: int, rank: int, world: int) -> dict[str, Any]:
    """One optimizer step over ``batches`` (:class:`llara.llm.batches.StepBatches`: this rank's ready
    micro-batches): forward/backward/step under DeepSpeed, counters kept on the device and read once.

    The loss is the mean over the answer tokens of the whole step (every micro-batch of every rank): each
    micro-batch's backward gets its answer-token loss sum over the step's answer tokens, times the
    accumulation steps and processes that DeepSpeed divides by. Returns the log row fields (loss, lr,
    hybrid_share, tokens_per_s, tokens, answer_tokens, step_s, pad_ratio and the diagnostics loss_hybrid,
    loss_text, first_token_loss, grad_norm_lora, grad_norm_projector, inject_norm)."""
    import numpy as np
    import torch

    from llara.llm.optim import StepStats

    t0 = time.perf_counter()
    lr_now = engine.get_lr()[0]
    samples = batches.samples
    # every rank sees the whole step's samples, so all agree on whether the projector is used
    opt.param_groups[1]["frozen"] = all(s["representation"] == "text" for s in samples)
    dev = engine.device
    stats = StepStats(dev)
    norms = (None, None)
    accum = len(batches.micro)
    factor = accum * world / max(batches.answer_tokens, 1)
    for m, (batch, part) in enumerate(zip(batches.micro, batches.micro_samples)):
        n_tokens = int(batch["attention_mask"].sum())
        torch.manual_seed(_micro_seed(seed, step, m, rank))
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        loss, n_ans = engine(**batch)
        engine.backward(loss * (n_ans * factor))
        if m == accum - 1:  # the step's accumulated gradients, before the update
            norms = grad_norms(engine.module)
        engine.step()
        is_text = torch.tensor([s["representation"] == "text" for s in part], device=dev)
        stats.add(loss, n_tokens, n_ans, getattr(engine.module, "last_stats", None), is_text)
    stats.reduced(world)
    totals = stats.row()  # the step's one host sync
    dt = time.perf_counter() - t0

    def r6(x: float | None) -> float | None:
        return None if x is None else round(x, 6)

    return {"loss": r6(totals["loss"]), "lr": lr_now,
            "hybrid_share": round(float(np.mean([s["hybrid"] for s in samples])), 6),
            "tokens_per_s": round(totals["tokens"] / dt, 2), "tokens": int(totals["tokens"]),
            "answer_tokens": int(totals["answer_tokens"]), "step_s": round(dt, 3),
            "pad_ratio": round(batches.real_tokens / max(batches.padded_tokens, 1), 4),
            "loss_hybrid": r6(totals["loss_hybrid"]), "loss_text": r6(totals["loss_text"]),
            "first_token_loss": r6(totals["first_token_loss"]), "grad_norm_lora": r6(norms[0]),
            "grad_norm_projector": r6(norms[1]), "inject_norm": r6(totals["inject_norm"])}


def grad_norms(module) -> tuple[float | None, float | None]:
    """L2 norms of the accumulated gradients of the LoRA and of the projector parameters (every rank calls it:
    under ZeRO the full gradient is gathered), None where DeepSpeed holds none."""
    import torch
    from deepspeed.utils import safe_get_full_grad

    sums = {"lora": None, "projector": None}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        g = safe_get_full_grad(p)
        if g is None:
            continue
        key = "projector" if name.startswith("projector.") else "lora"
        sq = g.float().pow(2).sum()
        sums[key] = sq if sums[key] is None else sums[key] + sq
    out = torch.stack([torch.tensor(-1.0) if v is None else v.cpu() for v in sums.values()]).tolist()
    return tuple(None if v < 0 else v ** 0.5 for v in out)


def train(cfg: TuneConfig, paths: TunePaths, threads: int | None = None,
          final_logits_path: str | None = None) -> dict[str, Any]:
    """Run (or resume) one tuning run as this process's rank; rank 0 writes the outputs. Returns a summary."""
    from llara.io import check_replaceable

    for name in ("adapter", "projector.safetensors", "train_log.csv", "probe.csv"):  # never replace what llara did not write
        check_replaceable(Path(paths.out_dir) / name)
    prep = preflight(cfg, paths)
    fp = fingerprint(cfg, paths)
    if "RANK" not in os.environ:
        launch_if_needed([], 1)
    if _cuda_count() == 0:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    import torch
    import torch.distributed as dist

    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    from llara.io import make_scratch_dir, remove_tree
    from llara.llm.data import Schedule
    from llara.llm.model import load_base, resolve_precision
    from llara.llm.prompts import PromptEncoder, resolve_prompt_format

    t_start = time.perf_counter()
    on_gpu = _cuda_count() > 0
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, on_gpu))
    for lock, age in stale_build_locks():
        log.warning("%s is %.0f min old: a DeepSpeed op build that was killed left it, and DeepSpeed waits for it "
                    "to go (a silent hang). If no other job is building ops, delete it: rm %s", lock, age / 60, lock)
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if threads:
        torch.set_num_threads(max(1, threads // (1 if on_gpu else world)))

    # frozen base weights in the training precision (DeepSpeed would cast them anyway): half the RAM
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    load_dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(cfg.precision, "float32")
    tok, base = load_base(paths.base, load_dtype, device=f"cuda:{local_rank}" if on_gpu else "cpu")
    fmt = resolve_prompt_format(cfg.prompt_format, tok)
    enc = PromptEncoder(tok, prep.titles, prep.templates, fmt, cfg.answer_format, cfg.token_position)
    module = build_module(base, cfg, prep.item_table, enc.special_ids[0])

    sched = Schedule(prep.rows, len(prep.titles), cfg.seed, cfg.epochs, cfg.effective_batch_size,
                     cfg.n_candidates, len(prep.templates), cfg.curriculum, cfg.representation, cfg.max_steps)
    T = sched.total_steps
    if cfg.micro_batch_size == "auto":
        cfg = dataclasses.replace(cfg, micro_batch_size=auto_micro_batch(module, enc, sched, cfg, world, on_gpu,
                                                                         local_rank))
    ds_cfg = build_ds_config(prep.ds_base, cfg, world)
    accum = ds_cfg["gradient_accumulation_steps"]
    mb = cfg.micro_batch_size
    n_trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)  # before ZeRO partitions them
    engine, opt = build_engine(module, cfg, ds_cfg, T)

    ckpt = Path(paths.ckpt_dir)
    start, log_rows, probe_log = 0, [], []
    fp_file = ckpt / "fingerprint.txt"
    resumable = (ckpt / "latest").is_file() and fp_file.is_file() and fp_file.read_text().strip() == fp
    if resumable:
        _, client = engine.load_checkpoint(str(ckpt), load_module_strict=False, load_optimizer_states=True,
                                           load_lr_scheduler_states=True)
        start, log_rows, probe_log = int(client["step"]), list(client["log"]), list(client.get("probe", []))
        if rank == 0:
            log.info("resumed from %s at step %d/%d", ckpt, start, T)
    else:
        if rank == 0:
            if ckpt.exists():
                log.info("discarding checkpoints in %s (no match for fingerprint %s)", ckpt, fp)
                remove_tree(ckpt, "tune")  # only a checkpoint folder this stage made: never a user's folder
            make_scratch_dir(ckpt, "tune")
            fp_file.write_text(fp + "\n")
        dist.barrier()
    if rank == 0:
        log.info("tune %s: %d samples, %d steps x %d samples (micro %d x accum %d x %d procs), %s prompts, "
                 "precision %s, ZeRO stage %s, %d trainable params, fingerprint %s",
                 cfg.dataset, len(prep.rows), T, cfg.effective_batch_size, mb, accum, world, fmt, cfg.precision,
                 ds_cfg.get("zero_optimization", {}).get("stage", 0), n_trainable, fp)

    from tqdm import tqdm

    from llara.llm.probe import run_probe

    token_norm = round(module.token_embedding_norm(), 6)

    def probe(step: int) -> None:
        """Probe on rank 0 (ZeRO-2 keeps full parameters on every rank) while the others wait."""
        if rank == 0:
            res = run_probe(engine.module, enc, prep.titles, prep.probe_rows, cfg.representation)
            probe_log.append({"step": step, "samples": step * cfg.effective_batch_size, **res})
            log.info("probe at step %d: valid HR@1 %.3f (chance %.3f), HR@5 %.3f, candidate loss %.3f, %.0f s",
                     step, res["hr1"], res["chance_hr1"], res["hr5"], res["cand_loss"], res["probe_s"])
        dist.barrier()

    probing = bool(cfg.probe_every) and prep.probe_rows is not None
    if probing and engine.zero_optimization_stage() == 3:
        log.warning("tune.probe_every is not supported under ZeRO-3 (partitioned parameters): no probe")
        probing = False
    if probing and start == 0:
        probe(0)

    from llara.llm.batches import Prefetcher, build_step

    kill_at = int(os.environ.get("LLARA_TEST_KILL_AT_STEP", "0"))  # fault injection for the resume test
    bar = tqdm(total=T, initial=start, desc="tune", disable=rank != 0, file=sys.stderr, mininterval=5)
    # the next steps' micro-batches are tokenised and grouped by length in a background thread
    prefetch = Prefetcher(lambda s: build_step(enc, sched.step_samples(s), s, mb, rank, world, pin=on_gpu),
                          range(start + 1, T + 1))
    engine.train()
    for step in range(start + 1, T + 1):
        row = {"step": step, "epoch": (step - 1) // sched.steps_per_epoch,
               **train_step(engine, opt, prefetch.get(step), cfg.seed, step, rank, world),
               "token_emb_norm": token_norm}
        log_rows.append(row)
        if probing and (step % cfg.probe_every == 0 or step == T):
            probe(step)
        bar.update(1)
        bar.set_postfix(loss=row["loss"], hybrid=row["hybrid_share"], tok_s=row["tokens_per_s"])
        if rank == 0 and (step % 10 == 0 or step in (1, T)):
            log.info("step %d/%d loss %.4f lr %.3g hybrid %.2f tokens/s %.1f", step, T, row["loss"], row["lr"],
                     row["hybrid_share"], row["tokens_per_s"])
        if step % cfg.checkpoint_every == 0 and step < T:
            tag = f"step{step:07d}"
            engine.save_checkpoint(str(ckpt), tag=tag, client_state={"step": step, "log": log_rows,
                                                                     "probe": probe_log, "fingerprint": fp},
                                   exclude_frozen_parameters=True)
            dist.barrier()
            if rank == 0:
                tags = sorted(p for p in ckpt.glob("step*") if p.is_dir())
                for old in tags[:-max(1, cfg.keep_checkpoints)]:
                    shutil.rmtree(old, ignore_errors=True)
            if kill_at and step >= kill_at:
                bar.close()
                prefetch.close()
                log.warning("LLARA_TEST_KILL_AT_STEP=%d: exiting abruptly after the checkpoint", kill_at)
                os._exit(137)
    bar.close()
    prefetch.close()

    # ---- outputs: fp32 master weights of the trainable parameters ----
    full = {}
    for name, p in engine.module.named_parameters():
        if p.requires_grad:
            hp = safe_get_full_fp32_param(p)  # collective under ZeRO-3: every rank calls it
            full[name] = (hp if hp is not None else p.detach()).float().cpu()
    summary = {"steps": T, "world": world, "fingerprint": fp, "wall_s": round(time.perf_counter() - t_start, 1),
               "n_trainable": n_trainable, "prompt_format": fmt}
    if rank == 0:
        write_outputs(engine.module, full, cfg, paths, fmt, log_rows, summary, prep, probe_log)
        if final_logits_path and engine.zero_optimization_stage() == 3:
            log.warning("--final-logits is not supported under ZeRO-3 (partitioned parameters): skipped")
        elif final_logits_path:
            write_final_logits(engine.module, full, enc, prep, cfg, final_logits_path)
        remove_tree(ckpt, "tune")  # outputs are complete: a later run must start afresh
        log.info("done: %s", summary)
    dist.barrier()
    return summary


def write_outputs(module, full: dict, cfg: TuneConfig, paths: TunePaths, fmt: str, log_rows: list[dict],
                  summary: dict[str, Any], prep: Prepared, probe_log: list[dict] | None = None) -> None:
    """adapter/ (peft folder + llara_provenance.json), projector.safetensors, train_log.csv, probe.csv (its header
    alone when the probe is off); atomically.

    ``full`` holds the fp32 (master) value of every trainable parameter, keyed by ``module`` names.
    """
    from llara.io import atomic_path
    from llara.llm.projector import LlaraProjector, save_projector
    from llara.provenance import provenance

    out = Path(paths.out_dir)
    meta = {"dataset": cfg.dataset, "representation": cfg.representation, "curriculum": cfg.curriculum,
            "prompt_format": fmt, "answer_format": cfg.answer_format, "token_position": cfg.token_position,
            "n_candidates": cfg.n_candidates,
            "templates": prep.templates,
            "base": str(paths.base)}
    prov = provenance(cfg.to_dict(), {"items": paths.items, "train": paths.train, "embeddings": paths.embeddings},
                      seed=cfg.seed, device="cuda" if _cuda_count() else "cpu", wall_time_s=summary["wall_s"],
                      summary=summary, llara=meta)
    lora_sd = {k[len("lm."):]: v for k, v in full.items() if k.startswith("lm.")}
    with atomic_path(out / "adapter", directory=True) as tmp:
        module.lm.save_pretrained(str(tmp), state_dict=lora_sd)
        (tmp / "llara_provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    proj = LlaraProjector(module.projector.d_rec, module.projector.d_llm, module.projector.n_special)
    proj.load_state_dict({"special": module.projector.special.detach().float().cpu(),  # frozen buffers
                          "out_norm": module.projector.out_norm.detach().float().cpu(),
                          **{k[len("projector."):]: v for k, v in full.items() if k.startswith("projector.")}})
    save_projector(proj, out / "projector.safetensors", meta)
    _atomic_text(out / "train_log.csv", _csv_text(log_rows, LOG_COLUMNS))
    _atomic_text(out / "probe.csv", _csv_text(probe_log or [], PROBE_COLUMNS))


def write_final_logits(module, full: dict, enc, prep: Prepared, cfg: TuneConfig, path: str) -> None:
    """Logits of the final model (fp32, trainable parameters at their saved values) on a fixed batch;
    tests compare a reloaded adapter to them. Casts the whole module: small models only."""
    import torch

    from llara.io import save_safetensors

    module = module.float().cpu()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in full:
                p.copy_(full[name])
    rows = [{"history": h, "candidates": list(range(min(cfg.n_candidates, len(prep.titles))))}
            for h in prep.rows.histories[:2]]
    batch = enc.inference_batch(rows, cfg.representation)
    module.eval()
    logits = module.logits(batch["input_ids"], batch["attention_mask"], batch["item_slots"])
    save_safetensors({"logits": logits, "input_ids": batch["input_ids"]}, path)


def main(argv: list[str] | None = None) -> int:
    """CLI of the tune stage; an expected error ends in one line, exit status 2 (llara.cli_errors)."""
    from llara.cli_errors import run_stage

    return run_stage("tune", _main, argv)


def _main(argv: list[str]) -> int:
    """Parse the tune arguments, check every input, then train (in-process or under a launcher)."""
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On a shared CPU, spinning
    # 2-thread regions ran 2-3x slower (measured 14-25 s vs 5.5-6.5 s per 4x238-token micro-step).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from llara.cli_errors import add_debug_argument, input_errors

    ap = argparse.ArgumentParser(description="LLaRA curriculum LoRA tuning under DeepSpeed")
    ap.add_argument("--config-json", required=True, help="the tune config slice as JSON (see TuneConfig)")
    ap.add_argument("--base", required=True, help="base model folder (HF layout)")
    ap.add_argument("--items", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--embeddings", required=True, help="seqrec item_embeddings.parquet")
    ap.add_argument("--templates", default=None, help="templates YAML (default: the packaged one)")
    ap.add_argument("--valid", default=None, help="valid.parquet: rows of the in-training probe (tune.probe_every)")
    ap.add_argument("--out-dir", required=True, help="writes adapter/, projector.safetensors, train_log.csv")
    ap.add_argument("--ckpt-dir", required=True, help="kept checkpoint folder (resume)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (split across CPU processes)")
    ap.add_argument("--nproc", type=int, default=None, help="processes per node (default: number of GPUs, 1 on CPU)")
    add_launch_arguments(ap)  # --nnodes, --rdzv-endpoint, --node-rank (llara.llm.launch)
    ap.add_argument("--final-logits", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--log", default=None, help="also log to this file")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    add_debug_argument(ap)
    args = ap.parse_args(argv)
    try:
        tune_settings = json.loads(args.config_json)
    except json.JSONDecodeError as e:
        ap.error(f"argument --config-json: not valid JSON ({e})")

    from llara.runlog import setup_logging

    rank = int(os.environ.get("RANK", "0"))
    setup_logging(args.log if rank == 0 else None, logging.INFO if rank == 0 else logging.WARNING)
    cfg = TuneConfig.from_dict(tune_settings)
    paths = TunePaths(base=args.base, items=args.items, train=args.train, embeddings=args.embeddings,
                      out_dir=args.out_dir, ckpt_dir=args.ckpt_dir, templates=args.templates, valid=args.valid)
    launching = "RANK" not in os.environ  # under a launcher the launch options were used already
    with input_errors():  # its checks raise ValueError naming the file, key or option
        nnodes = (check_launch(args.nnodes, args.nproc, args.node_rank, args.rdzv_endpoint, os.environ)
                  if launching else 1)
        preflight(cfg, paths)  # fail on bad input before any launcher or model
    if launching:
        child = [a for a in argv]
        rc = launch_if_needed(child, args.nproc, nnodes, node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint)
        if rc is not None:
            return rc
    train(cfg, paths, threads=args.threads, final_logits_path=args.final_logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
