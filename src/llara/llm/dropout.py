"""A faster dropout for LoRA inputs on CPU.

peft's LoRA layers apply ``nn.Dropout`` to the input of every adapted projection (7 per layer). On a CPU,
``torch.dropout`` draws one Bernoulli variate per element from the single-threaded Mersenne Twister: measured
~7 ns per element, 50x the cost of the rank-8 LoRA matmul it feeds and 25-34% of a SmolLM2-135M training
step (docs/performance.md). :class:`PackedDropout` draws 64 random bits per variate instead of per element
and cuts them into four 16-bit uniforms, so the generator runs a quarter as often:

- an element is kept when its 16-bit uniform is at least ``round(p * 65536)``: the drop probability is
  ``p`` rounded to a multiple of 1/65536 (0.1 -> 0.100006), and kept elements are scaled by the exact
  inverse of the keep probability, so the output's expectation is the input, as with ``nn.Dropout``;
- the bits come from torch's default CPU generator, so the masks are a function of its seed (the tune loop
  seeds it per micro-batch from (seed, step, micro-batch, rank)) and activation checkpointing, which saves
  and restores that generator's state, recomputes the same masks;
- on CUDA tensors (whose dropout is fast) and in eval mode it is ``nn.functional.dropout`` itself.
"""

from __future__ import annotations

import torch
from torch import nn

BITS = 16
LEVELS = 1 << BITS


class PackedDropout(nn.Module):
    """``nn.Dropout(p)`` with four 16-bit uniforms per 64-bit random draw on CPU (see the module docstring)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), found {p}")
        self.p = float(p)
        self.threshold = round(p * LEVELS)               # drop when the uniform is below it
        self.scale = LEVELS / (LEVELS - self.threshold)  # 1 / keep probability, exactly

    @property
    def effective_p(self) -> float:
        """The drop probability actually used on CPU (``p`` rounded to a multiple of 1/65536)."""
        return self.threshold / LEVELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0 or x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, self.training)
        n = x.numel()
        words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64)
        uniforms = words.view(torch.int16)[:n].view(x.shape)   # uniform over -32768..32767
        keep = uniforms >= self.threshold - (LEVELS >> 1)
        return torch.where(keep, x * self.scale, 0)

    def extra_repr(self) -> str:
        return f"p={self.p}, effective_p={self.effective_p:.6f}"


def pack_lora_dropout(model: nn.Module) -> int:
    """Replace the ``nn.Dropout`` modules of every peft LoRA layer in ``model`` by :class:`PackedDropout`
    with the same ``p``; returns how many were replaced (``nn.Identity``, used when ``p`` is 0, stays)."""
    n = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict):
            continue
        for name, d in list(drops.items()):
            if type(d) is nn.Dropout:
                drops[name] = PackedDropout(d.p)
                n += 1
    return n
