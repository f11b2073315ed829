"""LLM stage of LLaRA: base model preparation, prompts and hybrid injection, projector, curriculum LoRA
tuning under DeepSpeed (``llara.llm.train``) and the inference API used by evaluation
(``llara.llm.inference``: ``load_llara``, ``generate``, ``score_candidates``).

Heavy modules (torch, transformers, peft, deepspeed) are imported by the submodules, not here.
"""

__all__ = ["base", "data", "inference", "injection", "model", "projector", "prompts", "train"]
