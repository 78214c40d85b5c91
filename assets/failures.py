"""Bad input shows in the UI as one line naming it, not as a stack trace."""

from __future__ import annotations

import contextlib

import dagster as dg

from lg_pipeline.errors import InputError


@contextlib.contextmanager
def clear_errors():
    """An InputError of the core becomes a Dagster Failure with its one-line message."""
    try:
        yield
    except InputError as exc:
        raise dg.Failure(description=str(exc)) from None
