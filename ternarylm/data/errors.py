"""``DataError``: the one exception a user's data mistake raises, printed by the CLI as one line."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the user's data, tokenizer or cache; the message names it and the fix."""


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` of a library's exception, to quote in a ``DataError``."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
