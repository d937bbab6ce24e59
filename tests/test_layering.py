"""The dependency rules of docs/design.md, checked two ways.

By reading imports (ast): tiling.core imports no format library; no format
imports another format or the registry; tiling/formats/base.py imports no
format; tiling and models import neither torch/Ray nor each other as the
design says. And at run time: importing every module of tiling pulls in
neither torch nor Ray, and models pulls in no Ray.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORMAT_LIBS = ("rasterio", "affine", "pydicom", "highdicom", "zarr", "numcodecs")
FORMATS_DIR = ROOT / "tiling" / "formats"
FORMAT_NAMES = sorted(p.name for p in FORMATS_DIR.iterdir() if (p / "__init__.py").is_file())


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, by absolute name (the code base uses no relative imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module or "")
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for f in files:
        hits = sorted(m for m in imports_of(f) if any(m == x or m.startswith(x + ".") for x in forbidden))
        if hits:
            bad[str(f.relative_to(ROOT))] = hits
    return bad


def test_the_check_sees_imports() -> None:
    """Guard against a vacuous pass: the reader finds imports we know are there."""
    assert "rasterio" in imports_of(FORMATS_DIR / "geotiff" / "reader.py")
    assert "tiling.formats.base.Format" in imports_of(FORMATS_DIR / "geotiff" / "__init__.py")
    assert set(FORMAT_NAMES) >= {"geotiff", "dicom", "zarr"}


def test_core_imports_no_format_library_torch_or_ray() -> None:
    forbidden = (*FORMAT_LIBS, "torch", "ray", "tiling.formats", "models", "pipeline")
    assert offenders(modules(ROOT / "tiling" / "core"), forbidden) == {}


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_no_format_imports_another_format_or_the_registry(name: str) -> None:
    others = tuple(f"tiling.formats.{o}" for o in FORMAT_NAMES if o != name)
    files = modules(FORMATS_DIR / name)
    assert offenders(files, others) == {}
    registry = {str(f.relative_to(ROOT)) for f in files if "tiling.formats" in imports_of(f)}
    assert registry == set(), "formats import tiling.formats.base, never the registry itself"


def test_base_and_reference_import_no_format_and_no_registry() -> None:
    for name in ("base.py", "reference.py"):
        imported = imports_of(FORMATS_DIR / name)
        assert "tiling.formats" not in imported
        assert offenders([FORMATS_DIR / name], tuple(f"tiling.formats.{o}" for o in FORMAT_NAMES)) == {}
        assert offenders([FORMATS_DIR / name], FORMAT_LIBS) == {}


def test_tiling_and_models_stay_apart_from_ray_and_each_other() -> None:
    assert offenders(modules(ROOT / "tiling"), ("torch", "torchvision", "ray", "models", "pipeline")) == {}
    assert offenders(modules(ROOT / "models"), ("ray", "tiling", "pipeline")) == {}


@pytest.mark.parametrize(
    "package, forbidden",
    [("tiling", ("torch", "ray", "models", "pipeline")), ("models", ("ray", "tiling", "pipeline"))],
)
def test_importing_every_module_does_not_pull_in(package: str, forbidden: tuple[str, ...]) -> None:
    code = (
        f"import sys, pkgutil, importlib, {package}\n"
        f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'): importlib.import_module(m.name)\n"
        f"print(','.join(sorted(n for n in {forbidden!r} if n in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_opening_a_geotiff_imports_no_dicom_or_zarr(rgb_byte: Path) -> None:
    """The registry imports a format's libraries only when that format is used."""
    code = (
        "import sys\nfrom tiling.formats import open_source\n"
        f"open_source({str(rgb_byte)!r}).close()\n"
        "print(','.join(sorted(n for n in ('pydicom', 'highdicom', 'zarr') if n in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "module, heavy",
    [
        # what a model actor imports to run a model it was handed: no torchvision, no albumentations
        ("pipeline.infer.predict", ("torchvision", "albumentations")),
        # what `infer_scene` imports: training's augmentation is not needed to segment
        ("pipeline.infer.run", ("albumentations", "torchvision")),
        ("models", ("torchvision", "albumentations")),
        # the CLI parses its flags and starts Ray before torch, Ray Data or Ray Train load (seconds)
        ("pipeline.cli", ("torch", "ray.data", "ray.train", "albumentations", "pyogrio")),
        ("models.spec", ("torch",)),
    ],
)
def test_inference_imports_stay_light(module: str, heavy: tuple[str, ...]) -> None:
    """torchvision (it imports torch._dynamo) and albumentations cost seconds of start-up per process.

    They are imported where a DeepLabV3 is built or a tile augmented, so a
    model actor running a given model, and every read task, starts without them.
    """
    code = f"import sys, {module}\nprint(','.join(sorted(n for n in {heavy!r} if n in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_building_a_deeplab_still_finds_torchvision() -> None:
    """The lazy import is not a missing one: a DeepLabV3 is built through it."""
    code = (
        "import sys\nfrom models import build_model\n"
        "m = build_model('mobilenet_v3_large', 2, 3)\nprint(type(m).__module__, 'torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["torchvision.models.segmentation.deeplabv3", "True"]


@pytest.mark.parametrize("package", ["models", "models.train", "pipeline.train", "pipeline.infer"])
def test_lazy_packages_export_what_they_list(package: str) -> None:
    """Every name of a lazily importing package's ``__all__`` resolves, and nothing else does."""
    code = (
        f"import types, {package} as p\n"
        # a name that is also a submodule's (models.train.augment) must not resolve to the module
        "missing = [n for n in p.__all__ if getattr(p, n, None) is None or isinstance(getattr(p, n), types.ModuleType)]\n"
        "try:\n    p.no_such_name\n    print('no AttributeError')\nexcept AttributeError:\n    pass\n"
        "print(','.join(missing))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
