"""``DataError``: the one exception a user's data mistake raises, printed by the CLI as one line."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the user's data, tokenizer or cache; the message names it and the fix."""


def first_line(e: BaseException, with_type: bool = True, limit: int | None = None) -> str:
    """``Type: first line of the message`` of a library's exception (``with_type=False``: the line alone),
    cut to ``limit`` characters, to quote in a one-line error; the type's name when there is no message."""
    lines = str(e).strip().splitlines()
    if not lines:
        return type(e).__name__
    line = lines[0][:limit] if limit else lines[0]
    return f"{type(e).__name__}: {line}" if with_type else line
