"""The tuning optimizer and the per-step counters, both written for DeepSpeed's data-parallel engine.

- :class:`GroupFreezingAdam`: ``torch.optim.Adam`` (the authors' optimizer: Adam with coupled L2
  weight decay per group) that leaves a parameter group untouched, moments and decay included, while
  its ``frozen`` flag is set. The authors set ``requires_grad=False`` on the projector for text-only
  batches, so Adam skips it (no gradient); under ZeRO the gradient buffers always exist, so the
  training loop sets the flag instead. DeepSpeed keeps the group dicts and calls ``step()`` on them.
- :class:`StepStats`: loss and token counters of one optimizer step, kept on the training device, so
  a micro-step never waits for the GPU; one host read per optimizer step.
"""

from __future__ import annotations

import torch


class GroupFreezingAdam(torch.optim.Adam):
    """Adam that skips every parameter group whose ``frozen`` key is true (no update, no state change)."""

    def step(self, closure=None):
        groups = self.param_groups
        self.param_groups = [g for g in groups if not g.get("frozen", False)]
        try:
            return super().step(closure)
        finally:
            self.param_groups = groups


class StepStats:
    """Sum of micro-batch losses, micro-batch count, tokens and answer tokens of one optimizer step."""

    def __init__(self, device: torch.device | str):
        self.values = torch.zeros(4, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, n_tokens: int, n_answer: torch.Tensor) -> None:
        """Accumulate one micro-batch; ``loss`` and ``n_answer`` stay on the device (no sync)."""
        self.values[0] += loss.detach().to(torch.float64)
        self.values[1] += 1.0
        self.values[2] += float(n_tokens)
        self.values[3] += n_answer.detach().to(torch.float64)

    def reduced(self, world: int) -> torch.Tensor:
        """The counters summed over the ``world`` data-parallel processes (a collective on the device)."""
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(self.values)
        return self.values

    def row(self) -> dict[str, float]:
        """loss (mean over micro-batches), tokens, answer_tokens: the one host read of the step."""
        loss_sum, micro, tokens, answers = self.values.tolist()
        return {"loss": loss_sum / max(micro, 1.0), "tokens": tokens, "answer_tokens": answers}
