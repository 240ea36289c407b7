"""One text per item from its metadata, and where that text came from.

    >>> texts, sources = item_texts(["Heat (1995)", None, None], [["Action"], ["Drama"], []], [["heist"], [], []])
    >>> texts
    ['Heat (1995). Action. heist', 'Drama', '']
    >>> sources
    ['text', 'categories', 'none']

An item with a title or tags is described by them plus its categories ("text"); one with only
categories by those ("categories"); one with neither has no content ("none"): it gets no content
vector, and serving falls back to popularity for it and says so.
"""

from __future__ import annotations

from collections.abc import Sequence

TEXT, CATEGORIES, NONE = "text", "categories", "none"


def _names(value: object) -> list[str]:
    """A list column's value, or one ``|``-separated string (MovieLens genres), as clean names."""
    if value is None:
        return []
    parts = value.split("|") if isinstance(value, str) else [str(v) for v in value if v is not None]  # type: ignore[attr-defined]
    return [p.strip() for p in parts if p and p.strip()]


def item_text(title: str | None, categories: object = None, tags: object = None) -> tuple[str, str]:
    """``(text, source)`` for one item; see the module docstring."""
    title = (title or "").strip()
    cats, tag_list = _names(categories), _names(tags)
    if title or tag_list:
        parts = [p for p in (title, ", ".join(cats), ", ".join(tag_list)) if p]
        return ". ".join(parts), TEXT
    if cats:
        return ", ".join(cats), CATEGORIES
    return "", NONE


def item_texts(titles: Sequence[str | None], categories: Sequence[object] | None = None,
               tags: Sequence[object] | None = None) -> tuple[list[str], list[str]]:
    """Texts and sources of many items (``categories`` / ``tags`` may be None: absent for all)."""
    n = len(titles)
    cats = categories if categories is not None else [None] * n
    tgs = tags if tags is not None else [None] * n
    if len(cats) != n or len(tgs) != n:
        raise ValueError(f"item_texts: {n} titles but {len(cats)} categories and {len(tgs)} tags")
    out = [item_text(t, c, g) for t, c, g in zip(titles, cats, tgs, strict=True)]
    return [t for t, _ in out], [s for _, s in out]
