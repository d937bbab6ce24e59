"""Coded segment categories and types for a DICOM SEG, per class, from a small mapping file.

A SEG describes every segment with a *segmented property category* (what
kind of thing: tissue, organ, morphologically altered structure) and a
*segmented property type* (which thing: liver, neoplasm), each a coded
concept, usually SNOMED CT. Viewers (3D Slicer, OHIF) show and colour
segments by these codes. tilewise gives every class the generic SNOMED
"Tissue" category and type unless a mapping file says otherwise::

    # seg-codes.yaml (JSON with the same structure works too)
    default:                 # classes not listed below (optional)
      category: Tissue
      type: Tissue
    liver:                   # a class name, as given with --class-names
      category: Organ        # a keyword of pydicom's SNOMED CT codes (codes.SCT.Organ)
      type: Liver
    tumour:
      category: Morphologically Abnormal Structure  # words work too
      type: SCT:108369006:Neoplasm                  # or SCHEME:VALUE:Meaning

A code is a keyword of ``pydicom.sr.codedict.codes.SCT`` (``Organ``,
``Liver``, ``SoftTissue``...), the same words with spaces, or a full
``SCHEME:VALUE:Meaning`` triple (a mapping with ``scheme``, ``value`` and
``meaning`` also works).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from tiling.errors import ConfigError

__all__ = ["DEFAULT_CATEGORY", "DEFAULT_TYPE", "load_segment_codes", "parse_code", "segment_codes"]

#: The category and type of a class that no mapping names: SNOMED CT 85756007 "Tissue".
DEFAULT_CATEGORY: Code = codes.SCT.Tissue
DEFAULT_TYPE: Code = codes.SCT.Tissue


def parse_code(value: Any, where: str) -> Code:
    """The coded concept ``value`` names.

    Args:
        value: a keyword of ``codes.SCT`` (``"Organ"``, or ``"soft tissue"``
            in words), ``"SCHEME:VALUE:Meaning"``, or a mapping with
            ``scheme``, ``value`` and ``meaning``.
        where: the file and key, for the error message.

    Raises:
        ConfigError: if ``value`` names no code.
    """
    if isinstance(value, Mapping):
        try:
            return Code(str(value["value"]), str(value["scheme"]), str(value["meaning"]))
        except KeyError as e:
            raise ConfigError(
                f"{where}: a code mapping needs scheme, value and meaning; {e.args[0]} is missing"
            ) from None
    text = str(value).strip()
    parts = text.split(":", 2)
    if len(parts) == 3 and all(p.strip() for p in parts):
        return Code(parts[1].strip(), parts[0].strip(), parts[2].strip())
    keyword = "".join(w[:1].upper() + w[1:] for w in text.replace("-", " ").split())
    try:
        code: Code = getattr(codes.SCT, keyword)
        return code
    except AttributeError:
        raise ConfigError(
            f"{where}: {text!r} is not a SNOMED CT keyword of pydicom's codes.SCT (e.g. Tissue, Organ, Liver); "
            "give SCHEME:VALUE:Meaning instead"
        ) from None


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:  # pragma: no cover - PyYAML ships with the medical extra
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or write it as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); use .yaml for YAML") from None


def load_segment_codes(path: str | Path) -> dict[str, tuple[Code, Code]]:
    """Read a mapping file: class name (or ``default``) -> (category, type).

    Raises:
        ConfigError: if the file is unreadable, not a mapping, or names an unknown code.
    """
    path = Path(path)
    try:
        data = _read(path)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the segment codes ({e.strerror})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of class name -> {{category, type}}")
    out = {}
    for name, entry in data.items():
        where = f"{path}: {name}"
        if not isinstance(entry, Mapping) or not {"category", "type"} <= set(entry):
            raise ConfigError(f"{where}: expected a mapping with 'category' and 'type'")
        out[str(name)] = (
            parse_code(entry["category"], f"{where}.category"),
            parse_code(entry["type"], f"{where}.type"),
        )
    return out


def segment_codes(class_names: Sequence[str], mapping: Mapping[str, tuple[Code, Code]]) -> list[tuple[Code, Code]]:
    """(category, type) per class: its entry in ``mapping``, else ``default``'s, else Tissue/Tissue.

    Raises:
        ConfigError: if ``mapping`` names a class that is not in ``class_names``
            (a typo would otherwise silently fall back to the default).
    """
    unknown = sorted(set(mapping) - set(class_names) - {"default"})
    if unknown:
        raise ConfigError(
            f"seg_codes: {', '.join(map(repr, unknown))} not among the classes {', '.join(map(repr, class_names))}"
        )
    fallback = mapping.get("default", (DEFAULT_CATEGORY, DEFAULT_TYPE))
    return [mapping.get(name, fallback) for name in class_names]
