"""Title text shared by every stage: the one cleaning a title gets at preprocessing (prompts and scoring then
see the same string), the normalisation used for matching (ambiguous-title checks, answer matching), and a
bounded ``repr`` for error messages about values read from untrusted files."""

from __future__ import annotations

import re
import unicodedata

_TRANSLATE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u00a0": " ",
})
_SPACE = re.compile(r"\s+")

SPECIAL_TOKENS = ("[PH]", "[HistoryEmb]", "[CansEmb]", "[ItemEmb]")
"""LLaRA's special-token strings (``llara.llm.prompts`` adds them to the tokenizer); a title never holds one."""

_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))

MAX_TITLE_CHARS = 1000
"""The longest title (after cleaning) the data stage accepts; a longer one is refused, naming its item."""


def normalize_title(text: str) -> str:
    """Normalise a title or an output for matching: NFKC, case-fold, ASCII quotes/dashes, one space."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).casefold()
    return _SPACE.sub(" ", text).strip()


def clean_title(title: str) -> str:
    """The title as every stage shows and scores it: each special-token string replaced by a space, whitespace
    (newlines included) collapsed to single spaces, ends stripped.

    One pass is complete: the tokens hold no space, none is a prefix of another, and each has a single ``[``,
    so neither a leftover nor a newly joined token can remain."""
    return " ".join(_SPECIAL_RE.sub(" ", str(title)).split())


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, safe for any value read from a file: an integer too long
    for ``repr`` (Python refuses over 4300 digits) is shown by its digit count, also inside lists and tuples."""
    def fmt(v: object, depth: int) -> str:
        if type(v) is int and abs(v).bit_length() > 200:  # > 60 digits: never converted to text
            return f"<an integer of about {int(abs(v).bit_length() * 0.30103) + 1} digits>"
        if type(v) in (list, tuple) and depth < 3:
            inner, n = [], 0
            for x in v:
                s = fmt(x, depth + 1)
                inner.append(s)
                n += len(s) + 2
                if n > limit:
                    inner.append("...")
                    break
            body = ", ".join(inner)
            return f"[{body}]" if type(v) is list else f"({body}{',' if len(v) == 1 else ''})"
        if type(v) is str and len(v) > limit:
            return repr(v[:limit]) + f"... ({len(v)} characters)"
        try:
            return repr(v)
        except ValueError:  # a subclass of int or another value whose repr refuses
            return f"<a {type(v).__name__}>"
    text = fmt(value, 0)
    return text if len(text) <= limit + 40 else text[:limit] + "..."


__all__ = ["SPECIAL_TOKENS", "MAX_TITLE_CHARS", "normalize_title", "clean_title", "short_repr"]
