"""Shared CLI plumbing of the training-side commands. ``user_errors`` (bad input -> one line, exit 1)
and ``print_table`` are defined in ``ternarylm.format`` (the torch-free commands use them too) and
re-exported here."""

from __future__ import annotations

import json

import click

from ternarylm.format.cli_errors import EXTRA_FOR_MODULE, user_errors
from ternarylm.format.cli_table import print_table

__all__ = ["EXTRA_FOR_MODULE", "parse_overrides", "print_table", "user_errors"]


def parse_overrides(pairs: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs; values are parsed as JSON when they can be (numbers, booleans)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
