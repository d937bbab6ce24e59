"""One exception hierarchy for tilewise.

Every error a user can cause derives from :class:`TilingError`. Messages name
the file or option at fault, the value, and what to do about it, so the CLI
can print them as one line without a traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "NotGeoreferencedWarning",
    "SinkError",
    "SinkFinalizedError",
    "SourceOpenError",
    "SourceReadError",
    "SourceTooLargeError",
    "TilingError",
    "WindowError",
]


class TilingError(Exception):
    """Root of every error tilewise raises on purpose."""


class SourceOpenError(TilingError, OSError):
    """A source is missing, unreadable, corrupt or of an unsupported kind."""


class SourceTooLargeError(SourceOpenError):
    """A source claims more pixels, bands or chunk bytes than the configured limits allow."""


class SourceReadError(TilingError, OSError):
    """Reading a window of an opened source failed (truncated or corrupt data)."""


class WindowError(TilingError, ValueError):
    """A window is malformed, or two windows do not intersect."""


class ConfigError(TilingError, ValueError):
    """An option has a value tilewise cannot use."""


class SinkError(TilingError, OSError):
    """An output cannot be created or written."""


class SinkFinalizedError(SinkError):
    """A sink was written to after :meth:`finalize` or :meth:`abort`."""


class NotGeoreferencedWarning(UserWarning):
    """A source has no CRS or transform; the output will not be georeferenced either."""
