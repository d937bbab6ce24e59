"""An archive read from and written to S3 (moto's server, a real S3 protocol endpoint on localhost):
the masks are byte-identical to a local run's, and a second run skips every scene from the records in S3."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from models import Normalization
from pipeline.batch import EXIT_OK, EXIT_PARTIAL
from pipeline.cli import cli
from tests.conftest import write_scene
from tests.support.models import pointwise

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")  # run below in a process of its own

NORM = Normalization((128.0,) * 3, (64.0,) * 3)
FAST = ("--tile", "64", "--batch", "8", "--precision", "fp32", "--classes", "2", "--no-progress")


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on a free port, in a process of its own, with boto3's and GDAL's settings pointing at it.

    Its own process, as real object storage is: rasterio holds the GIL in some GDAL calls that
    fetch bytes (the geotransform), and tilewise plans scenes on threads, so a server inside
    this process could never answer them.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port, server)
        env = {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
        }  # fmt: skip
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        client = boto3.client("s3")
        for bucket in ("archive", "masks"):
            client.create_bucket(Bucket=bucket)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for_port(port: int, server: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once the server accepts connections; fail if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"moto's server exited with status {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"moto's server did not listen on port {port} within {timeout:g} s")


def batch(*args: object):
    obj = {"model": pointwise(), "normalization": NORM}
    return CliRunner().invoke(cli, ["batch", *map(str, args), *FAST], obj=obj, catch_exceptions=False)


def test_an_archive_in_s3_gives_the_masks_of_a_local_run(ray_session, tmp_path, s3) -> None:
    local = tmp_path / "archive"
    local.mkdir()
    rng = np.random.default_rng(11)
    for i in range(3):
        scene = write_scene(local / f"a{i}.tif", rng.integers(1, 255, (3, 80 + 16 * i, 96), np.uint8))
        s3.upload_file(str(scene), "archive", f"scenes/{scene.name}")
    result = batch(local, "--out", tmp_path / "masks")
    assert result.exit_code == EXIT_OK, result.output

    remote = batch("s3://archive/scenes/", "--out", "s3://masks/run")
    assert remote.exit_code == EXIT_OK, remote.output
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="masks")["Contents"])
    assert [k for k in keys if k.endswith("_mask.tif")] == [f"run/a{i}_mask.tif" for i in range(3)]
    assert "run/.tilewise/runs/latest.json" in keys and "run/.tilewise/state/a0_mask.tif.json" in keys
    for i in range(3):
        body = s3.get_object(Bucket="masks", Key=f"run/a{i}_mask.tif")["Body"].read()
        assert body == (tmp_path / "masks" / f"a{i}_mask.tif").read_bytes(), f"a{i}_mask.tif differs"
    record = json.loads(s3.get_object(Bucket="masks", Key="run/.tilewise/state/a1_mask.tif.json")["Body"].read())
    assert record["input"]["url"] == "s3://archive/scenes/a1.tif" and record["input"]["etag"]
    assert record["mask"] == "s3://masks/run/a1_mask.tif"

    again = batch("s3://archive/scenes/", "--out", "s3://masks/run")
    assert again.exit_code == EXIT_OK and "0 segmented, 3 skipped" in again.output, again.output


def test_objects_tilewise_did_not_write_are_never_uploaded_over(ray_session, tmp_path, s3) -> None:
    """The ownership rule of local outputs holds in S3: an object without tilewise's mark fails its scene."""
    rng = np.random.default_rng(12)
    for i in range(3):
        scene = write_scene(tmp_path / f"a{i}.tif", rng.integers(1, 255, (3, 64, 80), np.uint8))
        s3.upload_file(str(scene), "archive", f"scenes/{scene.name}")
    s3.put_object(Bucket="masks", Key="run/a0_mask.tif", Body=b"someone's own mask")
    s3.put_object(Bucket="masks", Key="run/a1_mask.json", Body=b'{"someone": "else"}')  # where a1's STAC Item goes
    result = batch("s3://archive/scenes/", "--out", "s3://masks/run")
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "Traceback" not in result.output
    report = json.loads(s3.get_object(Bucket="masks", Key="run/.tilewise/runs/latest.json")["Body"].read())
    status = {s["src"].rsplit("/", 1)[-1]: s for s in report["scenes"]}
    assert [n for n, s in status.items() if s["status"] == "done"] == ["a2.tif"]
    for name, key in (("a0.tif", "run/a0_mask.tif"), ("a1.tif", "run/a1_mask.json")):
        assert f"s3://masks/{key}: exists and was not written by tilewise" in status[name]["error"], status[name]
    assert s3.get_object(Bucket="masks", Key="run/a0_mask.tif")["Body"].read() == b"someone's own mask"
    assert s3.get_object(Bucket="masks", Key="run/a1_mask.json")["Body"].read() == b'{"someone": "else"}'
    assert "run/a1_mask.tif" not in {o["Key"] for o in s3.list_objects_v2(Bucket="masks")["Contents"]}
    head = s3.head_object(Bucket="masks", Key="run/a2_mask.tif")
    assert head["Metadata"] == {"written-by": "tilewise"}, "what tilewise uploads carries its mark"

    # a changed scene is redone over the objects tilewise wrote itself
    changed = write_scene(tmp_path / "a2.tif", rng.integers(1, 255, (3, 64, 80), np.uint8))
    s3.upload_file(str(changed), "archive", "scenes/a2.tif")
    s3.delete_object(Bucket="masks", Key="run/a0_mask.tif")
    s3.delete_object(Bucket="masks", Key="run/a1_mask.json")
    again = batch("s3://archive/scenes/", "--out", "s3://masks/run")
    assert again.exit_code == EXIT_OK and "3 segmented" in again.output, again.output
