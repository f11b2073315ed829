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
    """Counters of one optimizer step, kept on the training device (one host read per step): the loss summed
    over answer tokens, tokens, answer tokens, and the diagnostics of ``LlaraLM.last_stats`` split by prompt
    representation (text-only samples against the others)."""

    FIELDS = ("loss_sum", "micro", "tokens", "answer_tokens", "loss_hybrid_sum", "tokens_hybrid", "loss_text_sum",
              "tokens_text", "first_loss_sum", "first_n", "inject_norm_sum", "inject_n")

    def __init__(self, device: torch.device | str):
        self.values = torch.zeros(len(self.FIELDS), dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, n_tokens: int, n_answer: torch.Tensor, diag: dict | None = None,
            is_text: torch.Tensor | None = None) -> None:
        """Accumulate one micro-batch; ``loss``, ``n_answer``, ``diag`` (``LlaraLM.last_stats``) and ``is_text``
        (bool per row) stay on the device (no sync)."""
        v = self.values
        v[0] += loss.detach().to(torch.float64) * n_answer.detach().to(torch.float64)  # mean -> sum
        v[1] += 1.0
        v[2] += float(n_tokens)
        v[3] += n_answer.detach().to(torch.float64)
        if diag is None or is_text is None:
            return
        text = is_text.to(diag["row_loss"].dtype)
        other = 1.0 - text
        v[4] += (diag["row_loss"] * other).sum().double()
        v[5] += (diag["row_tokens"] * other).sum().double()
        v[6] += (diag["row_loss"] * text).sum().double()
        v[7] += (diag["row_tokens"] * text).sum().double()
        v[8] += diag["first_loss"].sum().double()
        v[9] += float(diag["first_loss"].numel())
        v[10] += diag["inject_norm"].double()
        v[11] += diag["inject_count"].double()

    def reduced(self, world: int) -> torch.Tensor:
        """The counters summed over the ``world`` data-parallel processes (a collective on the device)."""
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(self.values)
        return self.values

    def row(self) -> dict[str, float | None]:
        """loss (mean over the step's answer tokens: what the step optimises), tokens, answer_tokens, loss_hybrid / loss_text (mean per answer token of
        the non-text / text samples; None without such samples), first_token_loss (mean over samples) and
        inject_norm (mean L2 norm of the injected vectors; None without any): the one host read of the step."""
        d = dict(zip(self.FIELDS, self.values.tolist()))

        def ratio(num: str, den: str) -> float | None:
            return d[num] / d[den] if d[den] > 0 else None

        return {"loss": d["loss_sum"] / max(d["answer_tokens"], 1.0), "tokens": d["tokens"],
                "answer_tokens": d["answer_tokens"], "loss_hybrid": ratio("loss_hybrid_sum", "tokens_hybrid"),
                "loss_text": ratio("loss_text_sum", "tokens_text"), "first_token_loss": ratio("first_loss_sum", "first_n"),
                "inject_norm": ratio("inject_norm_sum", "inject_n")}
