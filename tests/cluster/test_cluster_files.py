"""Every file of ``cluster/`` parses, and every ``tilewise ...`` command line in them uses the CLI's real
commands and flags (read from click's command objects), so a renamed flag breaks this test, not a deployment."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml

from pipeline.cli import cli

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
FILES = sorted(p for p in CLUSTER.iterdir() if p.is_file())
#: where a command line ends in shell
SHELL_END = {"&&", "||", ";", "|", ">", ">>", "2>&1", '"'}


def strings(node: object) -> Iterator[str]:
    """Every string value of a parsed YAML document, at any depth (a ConfigMap's embedded YAML too)."""
    if isinstance(node, str):
        yield node
        if node.lstrip().startswith("apiVersion:"):
            for doc in yaml.safe_load_all(node):
                yield from strings(doc)
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def texts(path: Path) -> list[str]:
    """The texts of ``path`` that may hold a command: YAML values and comments; shell/Dockerfile lines."""
    raw = path.read_text()
    comments = [line.split("#", 1)[1] for line in raw.splitlines() if "#" in line]
    if path.suffix in (".yaml", ".yml"):
        docs = list(yaml.safe_load_all(raw))
        assert docs and all(d is not None for d in docs), f"{path.name}: empty YAML document"
        return [*(s for d in docs for s in strings(d)), *comments]
    return [re.sub(r"\\\n", " ", raw), *comments]  # shell continuations joined


def commands(text: str) -> Iterator[list[str]]:
    """Each ``tilewise <command> ...`` invocation in ``text`` (one per line), as arguments, up to where the
    shell takes over. An invocation starts a line, follows ``-- `` (ray job submit) or opens a quoted string."""
    for line in text.splitlines():
        for m in re.finditer(r"(?:^\s*|\s--\s+|\b(?:RUN|CMD|exec)\s+|[\"'])tilewise\s+(?=[a-z])", line):
            rest = line[m.end() :]
            try:
                words = shlex.split(rest)
            except ValueError:  # the invocation sits inside a quoted string that closes on this line
                words = shlex.split(re.split(r"(?<!\\)[\"']", rest)[0])
            args = []
            for w in words:
                if w in SHELL_END or w.startswith(">"):
                    break
                args.append(w)
            yield args


def flags_of(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_cluster_file_parses_and_its_tilewise_commands_use_real_flags(path: Path) -> None:
    found = [args for text in texts(path) for args in commands(text)]
    for args in found:
        name, *rest = args
        command = cli.commands.get(name)
        assert command is not None, f"{path.name}: tilewise has no command {name!r} (it has {sorted(cli.commands)})"
        known = flags_of(command)
        unknown = [a.split("=")[0] for a in rest if a.startswith("-") and a.split("=")[0] not in known]
        assert not unknown, f"{path.name}: tilewise {name} has no flag {', '.join(unknown)}"


def test_the_cluster_folder_has_each_deployment_piece_and_they_run_tilewise_batch() -> None:
    names = {p.name for p in FILES}
    assert {"ray-cluster.yaml", "Dockerfile", "kuberay-cluster.yaml", "kuberay-job.yaml"} <= names
    assert {"kuberay-cronjob.yaml", "submit.sh"} <= names
    kinds = {d["kind"] for p in FILES if p.suffix == ".yaml" for d in yaml.safe_load_all(p.read_text()) if "kind" in d}
    assert {"RayCluster", "RayJob", "CronJob"} <= kinds
    launcher = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types and {"cpu_reader", "gpu_worker"} <= set(types)
    for path in ("kuberay-job.yaml", "kuberay-cronjob.yaml", "submit.sh", "ray-cluster.yaml", "Dockerfile"):
        batches = [a for t in texts(CLUSTER / path) for a in commands(t) if a and a[0] == "batch"]
        assert batches, f"{path}: runs no tilewise batch"


def test_a_renamed_flag_is_caught() -> None:
    """The checker itself: a flag the CLI does not have is reported."""
    (args,) = list(commands("tilewise batch s3://a/ --out s3://b --num-gpus 2 --no-progress"))
    assert "--num-gpus" not in flags_of(cli.commands["batch"]) and "--num-workers" in flags_of(cli.commands["batch"])
    assert args[:2] == ["batch", "s3://a/"]
