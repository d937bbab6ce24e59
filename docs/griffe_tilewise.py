"""A Griffe extension for tilewise's API reference (loaded by mkdocstrings, see mkdocs.yml).

The docstrings are written for readers of the code: Google style, with Sphinx roles
(``:class:`~tiling.formats.base.Format```) where they point at another object. The site
renders them with mkdocstrings, which knows no Sphinx roles, so this extension does two things
when a package is loaded, without touching the code:

1. Each role becomes an optional cross-reference (``<autoref ... optional>``): a link where the
   target is rendered in the reference, plain code where it is not (a rasterio class, a private
   helper). Optional references never fail ``mkdocs build --strict``; every name the reference
   promises is checked by tests/test_docs.py instead.
2. A package that re-exports names of its modules (``from tiling import Window``) does not render
   them a second time: the re-exported aliases are hidden from the ``public`` filter, and the
   package's docstring gains a list of them, each linked to where it is documented.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Alias, AliasResolutionError, CyclicAliasError, Docstring, Extension, Module, Object

#: The packages the reference documents; links go only to objects inside them.
PACKAGES = ("tiling", "models", "pipeline")

#: ``:class:`~a.b.C```, ``:func:`f```, ``:data:`X``` ...: the role, an optional ``~``, the target.
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|const|mod|exc|obj):`(~?)([\w.]+)(?:\(\))?`")


class TilewiseReference(Extension):
    """Rewrite Sphinx roles as cross-references and list re-exported names once."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        """Rewrite every docstring of ``pkg`` and hide its re-exports, once the package is loaded."""
        if pkg.name not in PACKAGES:
            return
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(lambda m, o=obj: _crossref(o, m), obj.docstring.value)
            if isinstance(obj, Module):
                _list_reexports(obj)


def _walk(obj: Object) -> list[Object]:
    """``obj`` and every object defined under it (aliases are documented where they are defined)."""
    found = [obj]
    for member in obj.members.values():
        if not isinstance(member, Alias):
            found.extend(_walk(member))
    return found


def _crossref(obj: Object, match: re.Match[str]) -> str:
    """The HTML for one role found in ``obj``'s docstring."""
    short, target = match.group(1) == "~", match.group(2)
    shown = target.rsplit(".", 1)[-1] if short else target
    path = _resolve(obj, target)
    if path is None:
        return f"`{shown}`"
    return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'


def _resolve(obj: Object, target: str) -> str | None:
    """The full path ``target`` names as seen from ``obj``, or None when it is outside tilewise."""
    if target.split(".", 1)[0] in PACKAGES:
        return target
    head, _, rest = target.partition(".")
    scope: Object | None = obj
    while scope is not None:  # the object itself (a method named in its class), then its parents
        member = scope.members.get(head)
        if member is not None:
            base = _target(member) if isinstance(member, Alias) else member.path
            if base.split(".", 1)[0] not in PACKAGES:
                return None
            return f"{base}.{rest}" if rest else base
        scope = scope.parent
    return None


def _list_reexports(module: Module) -> None:
    """Hide the names ``module`` re-exports from elsewhere in tilewise; list them in its docstring."""
    links = []
    for name in [str(n) for n in module.exports or ()]:
        member = module.members.get(name)
        if not isinstance(member, Alias) or _target(member).split(".", 1)[0] not in PACKAGES:
            continue
        member.public = False
        links.append(f'<autoref identifier="{_target(member)}" optional><code>{name}</code></autoref>')
    if not links:
        return
    text = "Also importable from here: " + ", ".join(links) + "."
    if module.docstring is None:
        module.docstring = Docstring(text, parent=module)
    else:
        module.docstring.value += "\n\n" + text


def _target(alias: Alias) -> str:
    """Where ``alias`` finally points (through re-exports of re-exports), as far as is loaded yet."""
    try:
        return alias.final_target.path
    except (AliasResolutionError, CyclicAliasError):
        return alias.target_path
