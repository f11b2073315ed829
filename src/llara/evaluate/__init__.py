"""Evaluation: ranking metrics, the official generation metric, bootstrap intervals."""
