"""Where delivered objects live: S3 in production, LOCAL_DATA_DIR for the local transport."""

from __future__ import annotations

import hashlib
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, cast

from chalicelib.errors import ObjectUnavailable
from chalicelib.loader.ledger import local_etag

READ_BYTES = 1 << 20


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

    def open(self, key: str) -> tuple[Callable[[], BinaryIO], str]:
        """(opener, etag): the opener gives the object as a binary stream, once per call (a
        retried load reads it again), so that the loader never holds the whole object. Raises as
        `get`; reading the stream raises ObjectUnavailable. Here: from `get` (a store that has no
        streams)."""
        body, etag = self.get(key)
        return (lambda: io.BytesIO(body)), etag


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

    def open(self, key: str) -> tuple[Callable[[], BinaryIO], str]:
        return open_local_file(self._path(key), key)


def open_local_file(path: str, name: str) -> tuple[Callable[[], BinaryIO], str]:
    """(opener, etag) of a file: its MD5 (as S3 gives for a single-part upload) is read as a
    stream first, then the opener opens it again for the loader."""
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            while chunk := handle.read(READ_BYTES):
                digest.update(chunk)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise ObjectMissing(name) from exc
    except OSError as exc:
        raise ObjectUnavailable(f"cannot read {name}: {exc.strerror}") from exc

    def opener() -> BinaryIO:
        try:
            return cast(BinaryIO, _Guarded(open(path, "rb"), name))
        except OSError as exc:
            raise ObjectUnavailable(f"cannot read {name}: {exc.strerror}") from exc

    return opener, digest.hexdigest()


class _Guarded(io.RawIOBase):
    """A stream whose read errors are ObjectUnavailable (S3 cut the body short, a disk failed),
    closed once read to its end."""

    def __init__(self, raw: Any, name: str) -> None:
        self._raw = raw
        self._name = name

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            data: bytes = self._raw.read(size if size is not None and size >= 0 else None)
        except (BotoCoreError, OSError) as exc:
            raise ObjectUnavailable(f"cannot read {self._name}: {exc}") from exc
        if not data:
            self.close()
        return data

    def close(self) -> None:
        try:
            self._raw.close()
        except Exception:  # noqa: BLE001 - closing a broken stream may fail any way
            pass
        super().close()


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
        opener, etag = self.open(key)
        with opener() as stream:
            return stream.read(), etag

    def open(self, key: str) -> tuple[Callable[[], BinaryIO], str]:
        """GetObject once now (its errors raised here); the body is read as the loader asks.
        A retried load gets the object again, with If-Match on the same ETag."""
        response = self._get_object(key)
        etag = response["ETag"].strip('"')
        first = [response["Body"]]

        def opener() -> BinaryIO:
            body = first.pop() if first else self._get_object(key, etag)["Body"]
            return cast(BinaryIO, _Guarded(body, f"s3://{self.bucket}/{key}"))

        return opener, etag

    def _get_object(self, key: str, etag: str | None = None) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if etag is None:
                return self.client.get_object(Bucket=self.bucket, Key=key)
            return self.client.get_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                raise ObjectMissing(key) from exc
            raise ObjectUnavailable(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            # BotoCoreError covers timeouts and connection errors.
            raise ObjectUnavailable(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc


# A missing bucket is not "missing": the bucket name or the permissions are wrong, which an
# operator can mend, so it stays ObjectUnavailable (the event is retried, replay exits 1).
MISSING_CODES = frozenset(("NoSuchKey", "404", "NotFound"))


def s3_client() -> Any:
    """The process's S3 client (chalicelib.aws), made on first use."""
    from chalicelib.aws import aws_client

    return aws_client("s3")
