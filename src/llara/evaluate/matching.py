"""LLaRA's validity/hit rule for generated text, on normalised titles (see docs/metrics.md).

The official rule (``calculate_hr1`` in the authors' ``model/model_interface.py``): keep the first
line of the generated text, lower-case it, and collect every candidate whose lower-cased title occurs
in it as a substring. The output is *valid* iff exactly one candidate was collected, and *correct*
iff that candidate is the target. ValidRatio = valid / rows, HR@1 = correct / valid (the paper's
definition), and we also report strict HR@1 = correct / rows.

Two refinements, both documented in docs/metrics.md and both reported next to the literal rule:

* Titles and outputs are *normalised* before matching (Unicode NFKC, case-folding, typographic quotes
  and dashes mapped to ASCII, runs of white space collapsed), so that "Beyoncé" written with a
  combining accent or "Don’t" with a curly apostrophe still match.
* A candidate whose title is a substring of another candidate's title ("Up" and "Up in the Air") is
  *shadowed* when each of its occurrences lies inside an occurrence of the longer matched title.
  The literal rule calls the output "up in the air" invalid (both titles occur); we call it valid
  for "Up in the Air". If "up" also occurs on its own elsewhere, both remain and the output is invalid.

Anything that still names no candidate or several is invalid; nothing is ever guessed. Two candidates
with the same normalised title can never be told apart, so an output naming that title is invalid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llara.text import normalize_title

RULE_NAME = "llara-substring/v1"  # bump when the rule changes; stored in every metrics.json


def first_line(text: str) -> str:
    """The first line of the stripped output, as the official evaluation keeps it."""
    return text.strip().split("\n")[0]


def _spans(haystack: str, needle: str) -> list[tuple[int, int]]:
    """All (possibly overlapping) occurrences of ``needle`` in ``haystack`` as [start, end) spans."""
    out, start = [], haystack.find(needle)
    while start != -1:
        out.append((start, start + len(needle)))
        start = haystack.find(needle, start + 1)
    return out


@dataclass(frozen=True)
class Match:
    """The verdict on one output: which candidates it names under both rules."""

    matched: tuple[int, ...]        # candidate positions whose title occurs (literal rule)
    named: tuple[int, ...]          # positions left after removing shadowed titles (our rule)

    @property
    def valid(self) -> bool:
        return len(self.named) == 1

    @property
    def valid_literal(self) -> bool:
        return len(self.matched) == 1

    @property
    def position(self) -> int | None:
        """Position (0-based) of the named candidate, or None when invalid."""
        return self.named[0] if self.valid else None


def match_output(output: str, titles: Sequence[str], first_line_only: bool = True,
                 normalized: bool = False) -> Match:
    """Which of the candidate ``titles`` the generated ``output`` names (see the module docstring).

    ``titles`` are the row's candidate titles in candidate order (``normalized=True`` when they are
    already passed through :func:`normalize_title`). Raises ValueError on an empty normalised title,
    which would otherwise occur in every output.
    """
    text = normalize_title(first_line(output) if first_line_only else output)
    norm = list(titles) if normalized else [normalize_title(t) for t in titles]
    spans: dict[int, list[tuple[int, int]]] = {}
    for i, t in enumerate(norm):
        if not t:
            raise ValueError(f"candidate {i} has an empty title after normalisation ({titles[i]!r}); every output would contain it")
        s = _spans(text, t)
        if s:
            spans[i] = s
    matched = tuple(sorted(spans))
    named = []
    for i in matched:
        others = [(a, b) for j in matched if j != i and len(norm[j]) > len(norm[i]) and norm[i] in norm[j]
                  for a, b in spans[j]]
        shadowed = bool(others) and all(any(a <= s0 and e0 <= b for a, b in others) for s0, e0 in spans[i])
        if not shadowed:
            named.append(i)
    return Match(matched=matched, named=tuple(named))


@dataclass
class GenerationOutcomes:
    """Per-row results of the rule over a batch of outputs (arrays of length rows)."""

    valid: np.ndarray            # bool
    correct: np.ndarray          # bool (implies valid)
    predicted: list[int | None]  # the named candidate's item id, or None
    n_named: np.ndarray          # int: candidates named after shadowing (0, 1 or more)
    valid_literal: np.ndarray    # bool: the authors' literal rule
    correct_literal: np.ndarray  # bool


def score_outputs(outputs: Sequence[str], candidates: Sequence[Sequence[int]], targets: Sequence[int],
                  titles: dict[int, str] | Sequence[str], first_line_only: bool = True) -> GenerationOutcomes:
    """Apply the rule to every row: ``outputs[r]`` against the titles of ``candidates[r]``.

    ``titles`` maps item id -> title (a dict, or a sequence indexed by item id). Raises ValueError
    naming the row whose candidates lack the target (or hold it twice), or name an unknown item.
    """
    if not (len(outputs) == len(candidates) == len(targets)):
        raise ValueError(f"outputs, candidates and targets differ in length: {len(outputs)}, {len(candidates)}, {len(targets)}")
    cache: dict[int, str] = {}

    def norm(item: int) -> str:
        if item not in cache:
            try:
                cache[item] = normalize_title(titles[item])
            except (KeyError, IndexError):
                raise ValueError(f"candidate item {item} has no title in the items table") from None
        return cache[item]

    n = len(outputs)
    valid = np.zeros(n, bool)
    correct = np.zeros(n, bool)
    valid_lit = np.zeros(n, bool)
    correct_lit = np.zeros(n, bool)
    n_named = np.zeros(n, np.int64)
    predicted: list[int | None] = [None] * n
    for r, (out, cands, tgt) in enumerate(zip(outputs, candidates, targets)):
        cands = [int(c) for c in cands]
        if cands.count(int(tgt)) != 1:
            raise ValueError(f"row {r}: target {int(tgt)} occurs {cands.count(int(tgt))} times among its candidates, expected exactly once")
        m = match_output(out or "", [norm(c) for c in cands], first_line_only=first_line_only, normalized=True)
        n_named[r] = len(m.named)
        if m.valid:
            valid[r] = True
            predicted[r] = cands[m.position]
            correct[r] = predicted[r] == int(tgt)
        if m.valid_literal:
            valid_lit[r] = True
            correct_lit[r] = cands[m.matched[0]] == int(tgt)
    return GenerationOutcomes(valid, correct, predicted, n_named, valid_lit, correct_lit)
