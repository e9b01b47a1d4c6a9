"""Shared CLI plumbing: user mistakes become one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import json
import os

import click


# Optional dependencies -> the extra that installs them (a device install has none of them).
EXTRA_FOR_MODULE = {"torch": "train", "transformers": "train", "matplotlib": "plots", "datasets": "datasets"}


def user_errors(fn):
    """Turn ``ValueError``/``OSError`` raised for bad input into ``click.ClickException`` (exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except ModuleNotFoundError as e:
            extra = EXTRA_FOR_MODULE.get((e.name or "").split(".")[0])
            if extra is None or os.environ.get("TERNARYLM_DEBUG"):
                raise
            raise click.ClickException(f"{e.name} is not installed and this command needs it; "
                                       f"pip install \"ternarylm[{extra}]\"") from None
        except (ValueError, OSError) as e:
            if os.environ.get("TERNARYLM_DEBUG"):
                raise
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise click.ClickException(message) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None

    return wrapper


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


def print_table(rows: list[tuple], headers: tuple[str, ...]):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    click.echo(line)
    click.echo("  ".join("-" * w for w in widths))
    for row in rows:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
