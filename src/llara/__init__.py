"""LLaRA (SIGIR'24) as a reproducible pipeline: data, sequential recommenders, LLM tuning, evaluation."""

__version__ = "0.1.0"
