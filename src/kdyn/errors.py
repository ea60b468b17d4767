"""User-facing errors: one sentence that names the problem and how to fix it.

The CLI turns a `KdynError` into that sentence on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KdynError(Exception):
    """Bad input from the user (config, file, model name, run directory)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown(what: str, name: str, choices: Iterable[str]) -> KdynError:
    """KdynError for an unknown registry name, with a suggestion and the list of known names."""
    choices = sorted(choices)
    return KdynError(
        f"unknown {what} '{name}'{did_you_mean(name, choices)}; known: {', '.join(choices)}"
    )
