"""Database credentials: from the URL, or from AWS Secrets Manager (`DATABASE_SECRET_ARN`).

The secret is the JSON RDS writes for a managed or rotated secret: `username` and `password`,
and optionally `host`, `port` and `dbname`. It is fetched once per process, on the first connect
(boto3 is imported then, not before: a process that never connects never pays for it), and
cached. When a login is refused as access denied (MySQL error 1045), the connection code asks
for the secret again, once, so a rotation does not take the service down; refreshes are spaced
by at least `min_refresh_seconds`, so a wrong password cannot turn into a flood of API calls.

What the URL names wins over the secret, except the user and password: `mysql://HOST/DB` with a
secret connects to HOST as the secret's user; `mysql:///` (no host) takes host, port and dbname
from the secret as well.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    host: str = ""
    port: int | None = None
    database: str = ""

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(user={self.user!r}, host={self.host!r}, port={self.port!r}, database={self.database!r})"


class CredentialSource:
    """Where a database's login comes from. `refresh()` is asked after an access-denied login."""

    def get(self) -> Credentials:
        raise NotImplementedError

    def refresh(self) -> Credentials | None:
        """New credentials to try once more, or None when there is nothing new to try."""
        return None


class StaticCredentials(CredentialSource):
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def get(self) -> Credentials:
        return self.credentials


def parse_secret(text: str) -> Credentials:
    """The RDS secret JSON. ValueError (without any secret value in it) when it is not usable."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError("the database secret is not JSON") from exc
    if not isinstance(value, dict):
        raise ValueError("the database secret is not a JSON object")
    user, password = value.get("username"), value.get("password")
    if not isinstance(user, str) or not user or not isinstance(password, str):
        raise ValueError("the database secret needs string fields username and password")
    host = value.get("host") or ""
    port = value.get("port")
    dbname = value.get("dbname") or ""
    if not isinstance(host, str) or not isinstance(dbname, str):
        raise ValueError("the database secret's host and dbname must be strings")
    if port is not None:
        try:
            port = int(port)
        except (TypeError, ValueError) as exc:
            raise ValueError("the database secret's port must be a number") from exc
    return Credentials(user, password, host, port, dbname)


def secretsmanager_client() -> Any:
    """A Secrets Manager client with short timeouts, made on first use (boto3 imported here)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "secretsmanager",
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}),
    )


class SecretCredentials(CredentialSource):
    """Credentials read from one Secrets Manager secret, cached for the process."""

    def __init__(
        self,
        secret_id: str,
        client: Any = None,
        client_factory: Callable[[], Any] = secretsmanager_client,
        min_refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret_id = secret_id
        self._client = client
        self._client_factory = client_factory
        self.min_refresh_seconds = min_refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: Credentials | None = None
        self._fetched_at = float("-inf")
        self.fetches = 0

    def get(self) -> Credentials:
        cached = self._cached
        if cached is not None:
            return cached
        with self._lock:
            if self._cached is None:
                self._cached = self._fetch()
            return self._cached

    def refresh(self) -> Credentials | None:
        with self._lock:
            if self._clock() - self._fetched_at < self.min_refresh_seconds:
                return None
            old = self._cached
            self._cached = self._fetch()
            if self._cached == old:
                return None
            log.info("database secret changed (rotated); connecting with the new credentials")
            return self._cached

    def _fetch(self) -> Credentials:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            self._client = self._client_factory()
        self._fetched_at = self._clock()
        self.fetches += 1
        try:
            response = self._client.get_secret_value(SecretId=self.secret_id)
        except (ClientError, BotoCoreError) as exc:
            raise DatabaseUnavailable(f"cannot read the database secret {self.secret_id}: {exc}") from exc
        text = response.get("SecretString")
        if text is None:
            raise ValueError(f"the database secret {self.secret_id} has no SecretString")
        return parse_secret(text)


_sources: dict[str, SecretCredentials] = {}
_sources_lock = threading.Lock()


def secret_credentials(secret_id: str) -> SecretCredentials:
    """The process's one source per secret, so every database (master, replicas) shares one fetch."""
    with _sources_lock:
        source = _sources.get(secret_id)
        if source is None:
            source = _sources[secret_id] = SecretCredentials(secret_id)
        return source
