"""Seeded candidate sampling: n candidates per row, the target exactly once, no negative from the history."""

from __future__ import annotations

import numpy as np


def sample_candidate_sets(histories: list[list[int]], targets: list[int], n_items: int, n_candidates: int = 20,
                          n_sets: int = 5, seed: int = 0) -> list[list[list[int]]]:
    """For each row, ``n_sets`` lists of ``n_candidates`` distinct item ids.

    Each list holds the target once at a seeded position and ``n_candidates - 1`` negatives drawn
    uniformly from the items that are neither the target nor in the row's history. The same seed
    gives the same sets. Raises ValueError when a row has too few eligible negatives.
    """
    rng = np.random.default_rng(seed)
    out: list[list[list[int]]] = []
    need = n_candidates - 1
    for r, (hist, tgt) in enumerate(zip(histories, targets)):
        banned = set(hist)
        banned.add(tgt)
        if n_items - len(banned) < need:
            raise ValueError(f"row {r}: only {n_items - len(banned)} eligible negatives, {need} needed for {n_candidates} candidates")
        sets = []
        for _ in range(n_sets):
            draw = rng.choice(n_items, size=min(n_items, need + len(banned)), replace=False)
            negs = [int(i) for i in draw if int(i) not in banned][:need]
            pos = int(rng.integers(n_candidates))
            sets.append(negs[:pos] + [int(tgt)] + negs[pos:])
        out.append(sets)
    return out
