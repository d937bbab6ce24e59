"""Resolve option values given as enum members or strings, with suggestions."""

from __future__ import annotations

import difflib
from enum import Enum
from typing import TypeVar

from tiling.errors import ConfigError

__all__ = ["lookup_option"]

E = TypeVar("E", bound=Enum)


def lookup_option(value: E | str, enum: type[E], name: str) -> E:
    """Return the member of ``enum`` that ``value`` names.

    Raises:
        ConfigError: naming the option, the value, the valid choices and the
            closest match.
    """
    if isinstance(value, enum):
        return value
    choices = [m.value for m in enum]
    text = str(value).strip().lower()
    for member in enum:
        if member.value == text:
            return member
    close = difflib.get_close_matches(text, [str(c) for c in choices], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")
