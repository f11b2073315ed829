"""The model side of evaluation: anything with ``generate(rows)`` and ``score(rows)``.

:class:`LlaraEngine` wraps ``llara.llm.inference`` (``load_llara`` / ``generate`` /
``score_candidates`` / ``generate_and_score``); tests use a fake engine with the same two methods, so the
metric and orchestration code is exercised without an LLM. An engine may also offer
``generate_and_score(rows) -> (answers, scores)``: both modes from one prompt forward (evaluation uses it
when both modes run), with ``last_seconds`` ``{"generate": s, "rank": s}`` splitting the call's time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Engine(Protocol):
    """What evaluation needs from a model. ``rows`` are dicts with ``history`` and ``candidates``."""

    def generate(self, rows: list[dict]) -> list[str]:
        """One generated answer per row."""

    def score(self, rows: list[dict]) -> np.ndarray:
        """Scores ``[rows, n_candidates]`` (higher = more likely), in each row's candidate order."""


@dataclass
class LlaraEngine:
    """A loaded LLaRA (or zero-shot) model with the decoding settings of one evaluation."""

    model: Any
    representation: str = "hybrid"
    batch_size: int = 8
    rank_batch_size: int = 4
    max_new_tokens: int = 32
    device: str = field(default="cpu")
    last_seconds: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, base_dir: str | Path, items_path: str | Path, item_embeddings_path: str | Path | None = None,
             adapter_dir: str | Path | None = None, projector_path: str | Path | None = None, dataset: str = "lastfm",
             dtype: str = "float32", templates_path: str | Path | None = None, **settings: Any) -> LlaraEngine:
        """Load through ``llara.llm.inference.load_llara``; ``settings`` are this class's decoding fields."""
        from llara.llm import inference

        for name, p in (("base model folder", base_dir), ("items table", items_path),
                        ("item embeddings", item_embeddings_path), ("LoRA adapter folder", adapter_dir),
                        ("projector", projector_path)):
            if p is not None and not Path(p).exists():
                raise FileNotFoundError(f"{name} {p} does not exist")
        model = inference.load_llara(base_dir, items_path, item_embeddings_path=item_embeddings_path,
                                     adapter_dir=adapter_dir, projector_path=projector_path, dataset=dataset, dtype=dtype,
                                     templates_path=templates_path)
        device = str(getattr(model, "device", None) or _model_device(model))
        return cls(model=model, device=device, **settings)

    def generate(self, rows: list[dict]) -> list[str]:
        from llara.llm import inference

        return list(inference.generate(self.model, rows, representation=self.representation,
                                       batch_size=self.batch_size, max_new_tokens=self.max_new_tokens))

    def score(self, rows: list[dict]) -> np.ndarray:
        from llara.llm import inference

        return np.asarray(inference.score_candidates(self.model, rows, representation=self.representation,
                                                     batch_size=self.rank_batch_size), dtype=np.float64)

    def generate_and_score(self, rows: list[dict]) -> tuple[list[str], np.ndarray]:
        """``(generate(rows), score(rows))`` from one prompt forward per batch of ``batch_size`` rows.

        Sets ``last_seconds``: the call's time per mode, the shared prompt forward split evenly."""
        from llara.llm import inference

        t: dict[str, float] = {}
        outs, scores = inference.generate_and_score(self.model, rows, representation=self.representation,
                                                    batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                                                    timing=t)
        half = t.get("prefill", 0.0) / 2
        self.last_seconds = {"generate": half + t.get("decode", 0.0), "rank": half + t.get("score", 0.0)}
        return list(outs), np.asarray(scores, dtype=np.float64)


def _model_device(model: Any) -> str:
    for attr in ("llm", "model", "base_model"):
        inner = getattr(model, attr, None)
        dev = getattr(inner, "device", None)
        if dev is not None:
            return str(dev)
    return "cpu"
