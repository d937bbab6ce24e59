"""Label constants and the class palette shared by every mask writer.

One place for what a label value means, so the COG colour table, the
OME-Zarr ``image-label`` colours and the DICOM SEG segment colours agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tiling.errors import ConfigError

__all__ = [
    "LABEL_NODATA",
    "PALETTE",
    "RGB",
    "check_color_spec",
    "class_color",
    "class_colors",
    "colormap",
    "default_colormap",
    "default_names",
    "hex_color",
    "parse_color",
]

#: One colour: red, green, blue, 0-255 each.
RGB = tuple[int, int, int]

#: Label written where no valid pixel contributed (source nodata, padding).
LABEL_NODATA = 255

#: Distinct colours for the first classes (matplotlib's tab10).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def class_color(k: int) -> tuple[int, int, int]:
    """RGB of class ``k``: tab10 for the first ten, then a deterministic hash."""
    if k < len(PALETTE):
        return PALETTE[k]
    return ((k * 97) % 256, (k * 57) % 256, (k * 151) % 256)


def default_colormap(classes: int) -> dict[int, tuple[int, int, int, int]]:
    """RGBA per class value, and transparent black for :data:`LABEL_NODATA`."""
    return colormap([class_color(k) for k in range(classes)])


def colormap(colors: Sequence[RGB]) -> dict[int, tuple[int, int, int, int]]:
    """RGBA per class value from one colour per class, and transparent black for :data:`LABEL_NODATA`."""
    cmap: dict[int, tuple[int, int, int, int]] = {k: (*c, 255) for k, c in enumerate(colors)}
    cmap[LABEL_NODATA] = (0, 0, 0, 0)
    return cmap


def hex_color(rgb: Sequence[int]) -> str:
    """``#rrggbb`` of an RGB triple."""
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def parse_color(text: str) -> RGB:
    """An RGB triple from ``#rrggbb`` (the ``#`` may be left out).

    Raises:
        ConfigError: if ``text`` is not six hex digits.
    """
    m = re.fullmatch(r"#?([0-9A-Fa-f]{6})", text.strip())
    if not m:
        raise ConfigError(f"class_colors: {text!r} is not a colour; write it as #rrggbb, e.g. #1f78b4")
    h = m.group(1)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _split(entry: str) -> tuple[str | None, str]:
    name, sep, color = entry.rpartition("=")
    return (name.strip(), color) if sep else (None, entry)


def check_color_spec(spec: Sequence[str]) -> None:
    """Refuse a ``--class-colors`` value that is not colours, or mixes the two forms.

    Raises:
        ConfigError: naming the entry at fault.
    """
    named = [_split(e)[0] is not None for e in spec]
    if not spec:
        raise ConfigError("class_colors: no colours given; write name=#rrggbb,... or #rrggbb,... in class order")
    if any(named) and not all(named):
        raise ConfigError(
            f"class_colors: {','.join(spec)!r} mixes name=#rrggbb entries with bare colours; use one form"
        )
    for entry in spec:
        name, color = _split(entry)
        if name == "":
            raise ConfigError(f"class_colors: {entry!r} names no class; write name=#rrggbb")
        parse_color(color)


def class_colors(names: Sequence[str], spec: Sequence[str] | None = None) -> tuple[RGB, ...]:
    """One colour per class: the user's ``spec`` where it says, :func:`class_color` elsewhere.

    Args:
        names: the class names, in class order.
        spec: ``("water=#1f78b4", "trees=#33a02c")`` (by name; classes not
            named keep their default colour) or ``("#1f78b4", "#33a02c")``
            (in class order, one per class); None for the default palette.

    Raises:
        ConfigError: for a colour that does not parse, a name that is no
            class, or a list whose length is not the class count.
    """
    colors = [class_color(k) for k in range(len(names))]
    if spec is None:
        return tuple(colors)
    check_color_spec(spec)
    if _split(spec[0])[0] is None:
        if len(spec) != len(names):
            raise ConfigError(
                f"class_colors: {len(spec)} colours for {len(names)} classes ({', '.join(names)}); "
                "give one per class, or name them: name=#rrggbb"
            )
        return tuple(parse_color(c) for c in spec)
    index = {n: k for k, n in enumerate(names)}
    for entry in spec:
        name, color = _split(entry)
        if name not in index:
            raise ConfigError(f"class_colors: {name!r} is not a class; the classes are {', '.join(names)}")
        colors[index[name]] = parse_color(color)
    return tuple(colors)


def default_names(classes: int) -> list[str]:
    """``class_0``, ``class_1``, ... for runs that name no classes."""
    return [f"class_{k}" for k in range(classes)]
