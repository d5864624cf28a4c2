"""Damage a value on purpose, and never by accident leave it whole.

Replacing a character with a fixed one (`key[:-1] + "x"`) is a no-op whenever the character
already is that one — about one run in sixty for a base62 key — and the test then fails (or,
worse, passes for the wrong reason). `changed_at` always changes the text.
"""

from __future__ import annotations


def changed_at(text: str, index: int) -> str:
    """`text` with the character at `index` replaced by a different one (A, or B for an A)."""
    position = index % len(text)
    replacement = "B" if text[position] == "A" else "A"
    return text[:position] + replacement + text[position + 1 :]
