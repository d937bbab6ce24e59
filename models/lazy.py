"""Import a package's public names on first use (PEP 562), so importing the package stays cheap.

Shared by the lazy packages (``models``, ``models.train``, ``pipeline.train``,
``pipeline.infer``): each lists its names once in a ``TYPE_CHECKING`` block
for mypy and once here, by the module that defines them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, homes: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each name from its home module when first asked."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
