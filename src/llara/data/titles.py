"""Item titles at preprocessing: cleaned once for every later stage, bounded in length, checked for overlaps.

Prompts and scoring both read ``items.parquet``, so the title cleaned here (``llara.text.clean_title``: no
special-token string, single spaces) is the one a prompt shows and an answer is scored against. A title
that is empty once cleaned, or longer than ``llara.text.MAX_TITLE_CHARS`` characters, is refused naming the
file and the item. Overlaps (titles shared by several items, titles nested in another) are warnings.
"""

from __future__ import annotations

import logging
from collections import Counter

import polars as pl

from llara.data.parse import MalformedInputError
from llara.text import MAX_TITLE_CHARS, SPECIAL_TOKENS, clean_title, normalize_title, short_repr

log = logging.getLogger("llara.data.titles")


def clean_item_titles(items: pl.DataFrame, name: str) -> tuple[pl.DataFrame, int]:
    """``items`` (columns ``item_id``, ``title``, ``source_id``) with every title cleaned, and how many changed.

    Raises MalformedInputError naming ``name`` (the items file), the item's id in the source and what was
    found, for a title that is empty once LLaRA's special-token strings are removed, or that is longer than
    ``MAX_TITLE_CHARS``. The count of changed titles is logged with examples.
    """
    raw = items["title"].to_list()
    cleaned = [clean_title("" if t is None else t) for t in raw]
    for i, (before, after) in enumerate(zip(raw, cleaned)):
        if not after or len(after) > MAX_TITLE_CHARS:
            sid, iid = items["source_id"][i], items["item_id"][i]
            where = f"{name}, column 'title', item {str(sid)[:40]} (item_id {iid})"
            if not after:
                raise MalformedInputError(
                    f"{where}: expected a title with text besides LLaRA's special-token strings "
                    f"({', '.join(SPECIAL_TOKENS)}), found {short_repr(before)}")
            raise MalformedInputError(
                f"{where}: expected a title of at most {MAX_TITLE_CHARS} characters, found {len(after)} "
                f"characters ({short_repr(after, 40)}); shorten it in the items file")
    changed = [(b, a) for b, a in zip(raw, cleaned) if b != a]
    if changed:
        ex = ", ".join(f"{short_repr(b, 40)} -> {short_repr(a, 40)}" for b, a in changed[:3])
        log.warning("%s: %d titles cleaned (LLaRA's special-token strings %s removed, whitespace collapsed), e.g. %s; "
                    "prompts and scoring use the cleaned titles", name, len(changed), ", ".join(SPECIAL_TOKENS), ex)
    return items.with_columns(pl.Series("title", cleaned, pl.String)), len(changed)


def title_overlaps(titles: list[str], name: str) -> dict[str, int]:
    """Warn about titles that a generated answer cannot tell apart: titles shared by several items, and
    titles that occur inside another item's title (matching normalises case, quotes and spaces; see
    docs/metrics.md). Returns the two counts.

    Linear in the titles' total length: a title that is a prefix or suffix of another is nested without a
    search (the other one follows it in sorted order, of the titles or of the reversed titles); no two of the
    remaining titles end (or start) at the same character, so the search over all titles finds at most one
    of them per character.
    """
    norm = [normalize_title(t) for t in titles]
    counts = Counter(norm)
    shared = {t: c for t, c in counts.items() if c > 1}
    uniq = sorted(counts)
    nested: dict[str, str] = {}  # inner title -> one title it occurs in
    for a, b in zip(uniq, uniq[1:]):
        if a and b.startswith(a):
            nested.setdefault(a, b)
    rev = sorted(uniq, key=lambda s: s[::-1])
    for a, b in zip(rev, rev[1:]):
        if a and b.endswith(a):
            nested.setdefault(a, b)
    rest = [t for t in uniq if t and t not in nested]
    if rest and len(uniq) > 1:
        found = (pl.DataFrame({"outer": uniq}, schema={"outer": pl.String})
                 .with_columns(pl.col("outer").str.extract_many(rest, overlapping=True).list.unique().alias("inner"))
                 .explode("inner")
                 .filter(pl.col("inner").is_not_null() & (pl.col("inner") != pl.col("outer")))
                 .unique("inner", keep="first", maintain_order=True))
        for inner, outer in zip(found["inner"].to_list(), found["outer"].to_list()):
            nested.setdefault(inner, outer)
    n_shared = sum(shared.values())
    n_nested = sum(counts[t] for t in nested)
    if n_shared:
        ex = ", ".join(short_repr(t) for t in list(shared)[:3])
        log.warning("%s: %d items share their title with another item (e.g. %s); an answer naming such a title "
                    "can never be told apart", name, n_shared, ex)
    if n_nested:
        ex = ", ".join(f"{short_repr(t)} in {short_repr(nested[t])}" for t in sorted(nested)[:3])
        log.warning("%s: %d items have a title nested in another item's title (e.g. %s); answers naming the longer "
                    "title also contain the shorter one, which can make them ambiguous (docs/metrics.md)", name, n_nested, ex)
    return {"shared_titles": n_shared, "nested_titles": n_nested}


__all__ = ["clean_item_titles", "title_overlaps"]
