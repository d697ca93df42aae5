"""Fixtures of the functional tests that use S3 (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.functional.aws_fakes import BUCKET, boto_client, build_services, make_bucket, moto_aws


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A moto S3 client with the writes bucket made."""
    with moto_aws(monkeypatch, tmp_path):
        client = boto_client("s3")
        make_bucket(client)
        yield client


@pytest.fixture
def bucket_services(local_dir: Path) -> Iterator[Any]:
    """The app's services on the embedded database, with WRITES_BUCKET set (installed for the app)."""
    from chalicelib import bootstrap

    yield build_services({"LOCAL_DATA_DIR": str(local_dir), "WRITES_BUCKET": BUCKET})
    bootstrap.reset()
