"""Caption text helpers every parser backend uses (a module of its own: ``base`` imports the backends'
option sections, so a backend cannot import ``base``)."""
from __future__ import annotations


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, at a space when one is near."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[:cut if cut > max_chars // 2 else max_chars]
