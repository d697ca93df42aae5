"""Where delivered objects live: S3 in production, LOCAL_DATA_DIR for the local transport."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.errors import ObjectUnavailable
from chalicelib.loader import local_etag


class ObjectMissing(KeyError):
    """The object is not there (deleted, or never written): retrying will not bring it back."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    etag: str | None  # None when the listing does not give it (local files: the MD5 is read on get)
    last_modified: datetime | None = None  # when it arrived, where the listing says


class ObjectStore(ABC):
    bucket: str

    @abstractmethod
    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Objects whose key starts with prefix, in key order."""

    @abstractmethod
    def get(self, key: str) -> tuple[bytes, str]:
        """(body, etag). Raises ObjectUnavailable when it cannot be read now, ObjectMissing if gone."""


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str, bucket: str = "local") -> None:
        self.root = root
        self.bucket = bucket

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ObjectMissing(key)
        return os.path.join(self.root, *parts)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        # Walk only the folders the prefix can be under.
        folder, _, _ = prefix.rpartition("/")
        base = os.path.join(self.root, *folder.split("/")) if folder else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in filenames:
                if name.startswith("."):
                    continue  # a temporary file being written
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    found.append(rel)
        for key in sorted(found):
            yield StoredObject(key, None)

    def get(self, key: str) -> tuple[bytes, str]:
        try:
            with open(self._path(key), "rb") as handle:
                body = handle.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectMissing(key) from exc
        except OSError as exc:
            raise ObjectUnavailable(f"cannot read {key}: {exc.strerror}") from exc
        return body, local_etag(body)


class S3ObjectStore(ObjectStore):
    """An S3 bucket through a boto3 client made once by the caller."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def list(self, prefix: str) -> Iterator[StoredObject]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"], item["ETag"].strip('"'), item.get("LastModified"))
        except (ClientError, BotoCoreError) as exc:
            raise ObjectUnavailable(f"cannot list s3://{self.bucket}/{prefix}: {exc}") from exc

    def get(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                raise ObjectMissing(key) from exc
            raise ObjectUnavailable(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            # BotoCoreError covers timeouts, connection errors and a body cut short while read.
            raise ObjectUnavailable(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        return body, response["ETag"].strip('"')


# A missing bucket is not "missing": the bucket name or the permissions are wrong, which an
# operator can mend, so it stays ObjectUnavailable (the event is retried, replay exits 1).
MISSING_CODES = frozenset(("NoSuchKey", "404", "NotFound"))


def make_s3_client() -> Any:
    """An S3 client with explicit timeouts and retries (boto3 imported only now). The composition
    root (chalicelib.bootstrap) makes one per process, on first use."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 5, "mode": "standard"}),
    )


def s3_client() -> Any:
    """The process's S3 client, held by the composition root."""
    from chalicelib.bootstrap import aws_client

    return aws_client("s3")
