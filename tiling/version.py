"""tilewise's installed version, the mark on every output: looked up once per process.

Reading a distribution's metadata parses its METADATA file (about 2 ms), and
every scene's plan and sink asked for it.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

__all__ = ["mark", "version"]


@cache
def version() -> str:
    """The installed tilewise's version, or ``0.0.0`` when running from a source tree."""
    try:
        return metadata.version("tilewise")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def mark() -> str:
    """``tilewise <version>``: what every output records as the software that wrote it."""
    return f"tilewise {version()}"
