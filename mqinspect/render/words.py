"""Counted nouns in English, for every renderer: one helper, so that no table says "5 more processs"."""

from __future__ import annotations

_SIBILANT_ENDINGS = ("s", "x", "z", "ch", "sh")
_VOWELS = "aeiou"


def plural_noun(noun: str) -> str:
    """The plural of a regular English noun: process -> processes, entry -> entries, file -> files.
    For several words ("index hit") the last one changes."""
    if noun.endswith(_SIBILANT_ENDINGS):
        return noun + "es"
    if noun.endswith("y") and len(noun) > 1 and noun[-2] not in _VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def counted(count: int, noun: str) -> str:
    """ "1 file", "2 files", "3 entries": the count and the noun in the number it needs."""
    return f"{count} {noun if count == 1 else plural_noun(noun)}"


def more(count: int, noun: str) -> str:
    """ "1 more file", "5 more processes": what a table left out."""
    return f"{count} more {noun if count == 1 else plural_noun(noun)}"
