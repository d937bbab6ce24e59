"""Object storage for batch runs: scenes read from ``s3://`` URLs, masks and records written to one.

Reading goes through GDAL's ``/vsis3/`` (so any format GDAL reads works
from S3: GeoTIFF, COG); listing, fingerprints and uploads go through boto3.
Both take their settings from the usual environment: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, and for an S3-compatible server
boto3's ``AWS_ENDPOINT_URL`` with GDAL's ``AWS_S3_ENDPOINT``,
``AWS_HTTPS=NO`` and ``AWS_VIRTUAL_HOSTING=FALSE``.

An ``--out`` URL is staged: each mask is written into a local folder under
its temporary name, published there, then uploaded (one PUT per file, which
S3 makes visible whole or not at all) and the local copy removed; its state
record is uploaded after it. Records are downloaded at the start of a run.

Every object tilewise uploads carries its mark in the object's metadata
(``x-amz-meta-written-by: tilewise``), which a HEAD request reads: an
existing object without it was not written by tilewise, and a batch never
uploads over it (the rule that holds for local files).
"""

from __future__ import annotations

import fnmatch
import glob
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tiling.errors import ConfigError

__all__ = ["MARK", "S3", "gdal_path", "is_url"]

log = logging.getLogger(__name__)

#: The metadata every object tilewise uploads carries (``x-amz-meta-written-by``).
MARK = {"written-by": "tilewise"}


def is_url(path: str | Path) -> bool:
    """Whether ``path`` is an ``s3://`` URL."""
    return str(path).startswith("s3://")


def _split(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def gdal_path(url: str) -> str:
    """``s3://bucket/key`` as GDAL opens it: ``/vsis3/bucket/key`` (a path that survives ``pathlib``)."""
    return "/vsis3/" + url.removeprefix("s3://") if is_url(url) else url


class S3:
    """The few S3 calls a batch makes, through one boto3 client."""

    def __init__(self) -> None:
        try:
            import boto3
        except ModuleNotFoundError:
            raise ConfigError("s3:// URLs need boto3: pip install 'tilewise[cloud]'") from None
        self.client: Any = boto3.client("s3")

    def head(self, url: str) -> dict[str, Any] | None:
        """Size, ETag and modification time of the object at ``url``; None when there is none."""
        from botocore.exceptions import ClientError

        bucket, key = _split(url)
        try:
            h = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ConfigError(f"{url}: {e}") from None
        return {"url": url, "size": h["ContentLength"], "etag": h["ETag"], "modified": h["LastModified"].isoformat()}

    def written_by_tilewise(self, url: str) -> bool | None:
        """Whether the object at ``url`` carries tilewise's mark; None when there is no object.

        Raises:
            ConfigError: if S3 refuses the request (credentials, a missing bucket).
        """
        from botocore.exceptions import ClientError

        bucket, key = _split(url)
        try:
            h = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ConfigError(f"{url}: {e}") from None
        metadata = {k.lower(): v for k, v in (h.get("Metadata") or {}).items()}
        return all(metadata.get(k) == v for k, v in MARK.items())

    def objects_at(self, url: str) -> list[str]:
        """The object at ``url`` and every object under ``url/`` (a store uploaded as a folder)."""
        found = [url] if self.written_by_tilewise(url) is not None else []
        return found + list(self.list(url.rstrip("/") + "/"))

    def list(self, pattern: str) -> Iterator[str]:
        """URLs under a prefix (``s3://b/p/``) or matching a glob (``s3://b/p/*.tif``), in key order."""
        bucket, key = _split(pattern)
        magic = glob.has_magic(key)
        prefix = key[: min((key.index(c) for c in "*?[" if c in key), default=len(key))] if magic else key
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                k = obj["Key"]
                if (fnmatch.fnmatchcase(k, key) if magic else True) and not k.endswith("/"):
                    yield f"s3://{bucket}/{k}"

    def upload(self, path: Path, url: str) -> None:
        """Upload a file, or every file of a folder (a Zarr store: not atomic as a whole), to ``url``, marked."""
        bucket, key = _split(url)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            k = key if f == path else f"{key}/{f.relative_to(path).as_posix()}"
            self.client.upload_file(str(f), bucket, k, ExtraArgs={"Metadata": dict(MARK)})

    def download(self, url: str, path: Path) -> None:
        """Download the object at ``url`` to ``path``."""
        bucket, key = _split(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(bucket, key, str(path))
