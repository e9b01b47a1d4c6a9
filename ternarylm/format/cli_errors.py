"""User mistakes become one clear line and a non-zero exit, never a traceback: the one rule every
command follows (``ternary-run`` and ``ternary-profile`` on a device, ``ternary-export``, the training
commands). In ``format`` so the torch-free commands need nothing from the training side.

Example: ``ternary-run missing/`` prints ``Error: missing: not a folder; pass the folder ternary-export
wrote`` and exits 1; on a device install ``ternary-export`` prints ``Error: torch is not installed and
this command needs it; pip install "ternarylm[train]"``. ``TERNARYLM_DEBUG=1`` re-raises instead.
"""

from __future__ import annotations

import functools
import os

import click

# Optional dependencies -> the extra that installs them (a device install has none of them).
EXTRA_FOR_MODULE = {"torch": "train", "transformers": "train", "gguf": "train", "matplotlib": "plots",
                    "datasets": "datasets"}


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
