"""The error types a user sees: one line each. Bad input (`InputError`, exit code 2) names the input; a run that
stopped because of what it computed (`RunStopped`, exit code 1) names where and the setting to change.

Settings are named the way the core names them (`learning_rate`); a front end that calls them otherwise (the CLI's
`--lr`) renders the same message with its own names (`SettingsMessage.render`), so the core never spells a flag.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence


class InputError(ValueError):
    """Bad user input; the message names the input and fits on one line."""


class _Names(dict):
    """A setting not in the front end's map keeps the core's name."""

    def __missing__(self, key: str) -> str:
        return key


class SettingsMessage:
    """A one-line message whose `{setting}` fields are filled in with each front end's name for that setting."""

    def __init__(self, templates: Sequence[str]):
        self.templates = tuple(templates)
        super().__init__(self.render({}))

    def render(self, names: Mapping[str, str]) -> str:
        """The message with settings named as in `names` (the core's own name where `names` has none)."""
        return "; ".join(t.format_map(_Names(names)) for t in self.templates)

    def __reduce__(self):  # pickled (a Dagster step process) with its templates, not the rendered text
        return type(self), (self.templates,)

    def settings(self) -> list[str]:
        """The settings the message names."""
        return [f for t in self.templates for _, f, _, _ in string.Formatter().parse(t) if f]


def setting(name: str, text: str) -> str:
    """`name: text` as a template: the setting rendered per front end, `text` kept literally."""
    return "{" + name + "}: " + text.replace("{", "{{").replace("}", "}}")


class SettingsError(SettingsMessage, InputError):
    """Bad settings of one run, every problem at once (one line, `;` between them), each naming its setting."""


class RunStopped(SettingsMessage, RuntimeError):
    """A run stopped by what it computed (a loss that is not finite): where, and the setting to change."""


# Checks shared by the settings objects: each returns a problem template, or None when the value is fine.
def int_at_least(name: str, value: object, minimum: int, maximum: int | None = None) -> str | None:
    fine = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if fine and (maximum is None or value <= maximum):
        return None
    bound = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    return setting(name, f"must be an integer {bound}, got {value!r}")


def positive_number(name: str, value: object) -> str | None:
    """A finite number above 0 (`inf` and `nan` are not: they train into NaN weights)."""
    fine = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and value != float("inf")
    return None if fine else setting(name, f"must be a finite number above 0, got {value!r}")


def one_of(name: str, value: object, choices: Sequence[str]) -> str | None:
    return None if value in choices else setting(name, f"must be one of {', '.join(choices)}, got {value!r}")


def raise_problems(problems: Sequence[str | None]) -> None:
    """One SettingsError holding every problem found (None: fine)."""
    found = [p for p in problems if p]
    if found:
        raise SettingsError(found)
