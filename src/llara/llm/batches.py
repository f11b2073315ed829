"""Training micro-batches, built before their step: tokenised once per step, length-grouped, prefetched.

A step's samples (``Schedule.step_samples``: a pure function of (seed, step)) are tokenised in one call,
sorted by length and cut into micro-batches of ``micro`` samples, so each micro-batch pads only to the
longest of similar lengths; micro-batch ``j`` goes to rank ``j % world`` as its accumulation step
``j // world``. The plan depends only on the step's samples, so it is the same on every rank, for any
resume point. :class:`Prefetcher` builds the next steps in a background thread while the current one
computes, so the training loop only moves ready tensors (pinned when they go to a GPU).

The loss is normalised by the answer tokens of the whole step (all ranks, all micro-batches), counted
here before the step, so the gradient does not depend on how the step is cut into micro-batches or
processes (up to float rounding).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


def plan_micro_batches(lengths: list[int], micro: int, world: int, group_by_length: bool = True
                       ) -> list[list[list[int]]]:
    """Sample indices per (accumulation step, rank): ``plan[m][r]`` is rank ``r``'s ``m``-th micro-batch.

    ``len(lengths)`` must be a multiple of ``micro * world``. With ``group_by_length`` the samples are sorted by
    length (stable: ties keep the step's order) before they are cut, else they keep the step's order.
    """
    n = len(lengths)
    if micro < 1 or world < 1 or n % (micro * world):
        raise ValueError(f"{n} samples do not split into micro-batches of {micro} on {world} process(es)")
    order = np.argsort(np.asarray(lengths), kind="stable") if group_by_length else np.arange(n)
    chunks = [order[i:i + micro].tolist() for i in range(0, n, micro)]
    accum = len(chunks) // world
    return [[chunks[m * world + r] for r in range(world)] for m in range(accum)]


@dataclass
class StepBatches:
    """One optimizer step's inputs for one rank."""

    step: int
    samples: list[dict]                       # the whole step's samples (every rank's)
    micro: list[dict[str, torch.Tensor]]      # this rank's micro-batches, in accumulation order
    micro_samples: list[list[dict]]           # the samples of each of them
    answer_tokens: int                        # answer tokens of the whole step: the loss's denominator
    real_tokens: int                          # this rank's non-padding tokens
    padded_tokens: int                        # this rank's tokens including padding
    extra: dict[str, Any] = field(default_factory=dict)


def build_step(enc, samples: list[dict], step: int, micro: int, rank: int, world: int,
               group_by_length: bool = True, pin: bool = False) -> StepBatches:
    """Tokenise ``samples`` once and build this rank's micro-batches (see the module docstring)."""
    seqs, n_prompt = enc.encode_training(samples)
    lengths = [len(s) for s in seqs]
    answer = sum(len(s) - k for s, k in zip(seqs, n_prompt))
    plan = plan_micro_batches(lengths, micro, world, group_by_length)
    batches, parts, real, padded = [], [], 0, 0
    for per_rank in plan:
        idx = per_rank[rank]
        part = [samples[i] for i in idx]
        b = enc.training_batch(part, ([seqs[i] for i in idx], [n_prompt[i] for i in idx]))
        real += int(b["attention_mask"].sum())
        padded += b["attention_mask"].numel()
        if pin:
            b = {k: v.pin_memory() for k, v in b.items()}
        batches.append(b)
        parts.append(part)
    return StepBatches(step, samples, batches, parts, answer, real, padded)


class Prefetcher:
    """Runs ``make(step)`` for ``steps`` in order in a background thread, ``depth`` steps ahead; ``get(step)``
    returns them in the same order (an exception in ``make`` is raised there)."""

    def __init__(self, make: Callable[[int], Any], steps: range, depth: int = 2):
        self._make, self._steps = make, steps
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llara-batches", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for step in self._steps:
            if self._stop.is_set():
                return
            try:
                item = (step, self._make(step), None)
            except BaseException as e:  # handed to the consumer
                item = (step, None, e)
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def get(self, step: int) -> Any:
        """The result for ``step`` (the next one in order)."""
        got, value, err = self._q.get()
        if err is not None:
            raise err
        if got != step:
            raise RuntimeError(f"prefetcher: expected step {step}, got {got}")
        return value

    def close(self) -> None:
        """Stop the thread (at a step boundary); pending results are dropped."""
        self._stop.set()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)


CPU_MICRO_BATCH = 8  # ``micro_batch_size: auto`` on a CPU: the fastest per token on 2 cores (docs/performance.md)
CPU_SMALL_MEMORY_GIB = 16  # below this much RAM, ``auto`` on a CPU takes half that (activations ~2x smaller)


def cpu_micro_batch_cap() -> int:
    """The largest micro-batch ``auto`` considers on a CPU: 8, or 4 on a machine with under 16 GiB of RAM."""
    import os

    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        ram = 0.0
    return CPU_MICRO_BATCH if ram >= CPU_SMALL_MEMORY_GIB else CPU_MICRO_BATCH // 2
GPU_MEMORY_SHARE = 0.85  # ``auto`` on a GPU: the probe's peak must stay under this share of the card


def choose_micro_batch(effective: int, world: int, fits: Callable[[int], bool], cap: int = 4096) -> int:
    """The largest power of two ``m <= cap`` that divides ``effective / world`` and for which ``fits(m)``; 1 if
    none (``fits`` is tried from the largest down)."""
    per_rank = effective // world
    for m in (1 << k for k in range(12, 0, -1)):
        if m <= min(per_rank, cap) and per_rank % m == 0 and fits(m):
            return m
    return 1


def gpu_fits(module, enc, samples: list[dict], device, share: float = GPU_MEMORY_SHARE) -> Callable[[int], bool]:
    """``fits(m)`` for :func:`choose_micro_batch` on a GPU: one forward + backward of ``m`` copies of the longest
    of ``samples`` peaks under ``share`` of the card's memory (the rest is headroom for longer prompts, the
    optimizer states and the allocator). Gradients are cleared after each try."""
    seqs, n_prompt = enc.encode_training(samples)
    i = max(range(len(seqs)), key=lambda j: len(seqs[j]))
    total = torch.cuda.get_device_properties(device).total_memory

    def fits(m: int) -> bool:
        b = enc.training_batch([samples[i]] * m, ([seqs[i]] * m, [n_prompt[i]] * m))
        b = {key: v.to(device) for key, v in b.items()}
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            loss, _ = module(**b)
            loss.backward()
            torch.cuda.synchronize(device)
            ok = torch.cuda.max_memory_allocated(device) <= share * total
        except torch.cuda.OutOfMemoryError:
            ok = False
        finally:
            module.zero_grad(set_to_none=True)
            del b
            torch.cuda.empty_cache()
        return ok

    return fits
