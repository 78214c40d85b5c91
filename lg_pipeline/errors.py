"""The one error type for bad user input: its message names the input and fits on one line (exit code 2)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input; the message names the input and fits on one line."""
