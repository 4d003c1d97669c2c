"""Text that people read back: class names, API key names, model descriptions. The API, the
dashboard, logs and mask legends show it, so it must show what it holds.

Refused in names: every character that is invisible or changes how the text around it displays:
control characters (Unicode category Cc: NUL, which PostgreSQL refuses in text, and the C0/C1
controls), format characters (Cf: the bidirectional embeddings, overrides and isolates U+202A..U+202E
and U+2066..U+2069 that make "car\\u202e" print backwards, the marks U+200E, U+200F and U+061C,
the zero-width U+200B..U+200D, U+2060 and U+FEFF), private-use characters (Co), surrogates (Cs)
and the line and paragraph separators (Zl, Zp). Two names that print alike are then alike.

Free text (descriptions) may need some of those (ZWJ in emoji, ZWNJ in Persian, marks in mixed
scripts, line breaks): only the characters that reorder the text after them are refused there.
"""

from __future__ import annotations

import unicodedata

HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})
# Embeddings, overrides and isolates: they reorder what follows them (the "Trojan source" characters).
BIDI_REORDERING = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
NAME_RULE = "control, format (bidirectional, zero-width), private-use and separator characters are not allowed"


def code_point(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: a character named so that a reader can see which it is."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def hidden_character(text: str) -> str | None:
    """The first character of ``text`` that a name may not hold (see the module), as ``code_point``
    names it; None when there is none."""
    for char in text:
        if unicodedata.category(char) in HIDDEN_CATEGORIES:
            return code_point(char)
    return None


def reordering_character(text: str) -> str | None:
    """The first bidirectional embedding, override or isolate in ``text``, named; None when there is none."""
    for char in text:
        if char in BIDI_REORDERING:
            return code_point(char)
    return None
