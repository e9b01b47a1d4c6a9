"""The plain-text table every command prints its results with (columns padded to the widest cell),
here so ``ternary-export`` and the training commands share it without importing each other.

Example: ``print_table([("ort", "ok")], ("engine", "result"))`` prints::

    engine  result
    ------  ------
    ort     ok
"""

from __future__ import annotations

import click


def print_table(rows: list[tuple], headers: tuple[str, ...]):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    click.echo(line)
    click.echo("  ".join("-" * w for w in widths))
    for row in rows:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
