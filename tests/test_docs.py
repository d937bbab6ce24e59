"""The documentation site builds with ``--strict``, its API reference lists every public name of tiling, models
and pipeline, its examples parse, and each benchmark has its data and its section."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docs import ROOT, check_tilewise, code_blocks, make_targets, materialise, shell_commands

griffe = pytest.importorskip("griffe", reason="the docs extra (mkdocstrings) is not installed")

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
PACKAGES = ("tiling", "models", "pipeline")
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once as CI builds it: strict, so a broken link, anchor or docstring fails here."""
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def public_names() -> list[tuple[str, str, str]]:
    """(module, name, where it is documented) for every name of every ``__all__`` in the three packages."""
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)])
    for package in PACKAGES:
        loader.load(package)
    loader.resolve_aliases(external=False)
    found = []
    for package in PACKAGES:
        modules = [loader.modules_collection[package]]
        while modules:
            module = modules.pop()
            modules.extend(m for m in module.modules.values() if not m.is_alias)  # not a module it imports
            for name in map(str, module.exports or ()):
                member = module.members[name]
                home = member.final_target.path if isinstance(member, griffe.Alias) else member.path
                found.append((module.path, name, home))
    return found


def test_the_api_reference_lists_every_public_name(site: Path) -> None:
    anchors = set()
    for page in (site / "api").rglob("*.html"):
        anchors |= set(re.findall(r'id="([\w.]+)"', page.read_text()))
    names = public_names()
    assert len(names) > 400, "every package's __all__ was read"
    missing = [f"{module}.{name} (documented at {home})" for module, name, home in names if home not in anchors]
    assert not missing, "not in the API reference (add a '::: module' line to docs/api/): " + ", ".join(missing)


def test_a_package_lists_what_it_re_exports_each_linked_to_its_home(site: Path) -> None:
    lists = {}
    for page in (site / "api").rglob("*.html"):
        for part in page.read_text().split("Also importable from here")[1:]:
            lists.setdefault(page.parent.name, []).append(part.split("</p>", 1)[0])
    assert {"tiling", "tiling.core", "models", "pipeline.infer"} <= set(lists)
    for page, found in lists.items():
        for listed in found:
            assert "<span title=" not in listed, f"api/{page}: a re-exported name links nowhere: {listed}"
    assert 'href="../tiling.core/#tiling.core.windows.Window"' in lists["tiling"][0]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_the_commands_of_each_page_are_real(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for block in code_blocks(page.read_text(), "bash", "sh"):
        for words in shell_commands(block):
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # environment assignments
                words = words[1:]
            if words[0] == "tilewise":
                materialise(words, tmp_path)
                check_tilewise(words[1:])
            elif words[0] == "make":
                assert set(words[1:]) <= make_targets(), f"{page.name}: {words}: no such Makefile target"
            elif words[0].endswith("python") and words[1].startswith("benchmarks/"):
                assert (ROOT / words[1]).is_file(), f"{page.name}: {words[1]} does not exist"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_the_python_of_each_page_imports_real_names(page: Path) -> None:
    for block in code_blocks(page.read_text(), "python"):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{page.name}: {node.module} has no {alias.name}"


@pytest.mark.parametrize("script", BENCHMARKS)
def test_each_benchmark_has_its_data_and_its_section(script: str) -> None:
    records = [json.loads(line) for line in (ROOT / "benchmarks" / "results" / f"{script}.jsonl").open()]
    assert records
    for r in records:
        assert r["script"] == f"{script}.py" and r["figures"] and r["machine"] and r["command"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["date"]) and re.fullmatch(r"[0-9a-f]{7,40}", r["recorded_in"])
    page = (DOCS / "benchmarks.md").read_text()
    assert f"\n## {script}\n" in page and f"(results/{script}.jsonl)" in page
