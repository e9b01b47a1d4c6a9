"""Shared CLI plumbing of the training-side commands (``user_errors`` and ``print_table``, which the
torch-free commands use too, are in ``ternarylm.format``)."""

from __future__ import annotations

import json

import click


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
