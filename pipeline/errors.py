"""The errors a user causes (bad input, bad options): the CLI prints them as one line, without a traceback."""

from __future__ import annotations

from models.errors import ModelError
from tiling.errors import TilingError

__all__ = ["USER_ERRORS"]

#: Errors caused by input or options, as opposed to bugs.
USER_ERRORS: tuple[type[Exception], ...] = (TilingError, ModelError)
