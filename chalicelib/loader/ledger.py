"""The ledger `ingest_batches`: which delivered objects are loaded, each under its batch id.

An object's batch id is the SHA-256 of its key (from the `writes/` component on: prefixes above it
do not matter) and its ETag. A load inserts the object's row first in its own transaction
(`Ledger.claim`: a concurrent load of the same object waits on it), and sets the row's counts as
its last statement (`Ledger.counted`); an object whose row exists is skipped unless forced.
"""

from __future__ import annotations

import hashlib
from typing import Any

from chalicelib.db.database import Database

CHUNK = 500  # batch ids per query


def ledger_key(key: str) -> str:
    """The object's key from its `writes/` component on (so prefixes above it do not matter)."""
    index = key.find("writes/")
    return key[index:] if index >= 0 else key


def batch_id(key: str, etag: str) -> str:
    return hashlib.sha256(f"{ledger_key(key)}\n{etag.strip(chr(34))}".encode("utf-8", "surrogatepass")).hexdigest()


def local_etag(body: bytes) -> str:
    """What S3 gives as the ETag of a single-part upload: the MD5 of the bytes."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def backslash_escaped(text: str) -> str:
    """`text` as valid UTF-8, what UTF-8 cannot hold (a lone surrogate) written as its backslash
    escape: a local file's name may hold one, and an error message may quote what an object held.
    (Rejected lines keep their bytes another way: reject_lines.storable.)"""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Ledger:
    """The `ingest_batches` rows of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def holds(self, bid: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM ingest_batches WHERE batch_id = %s", (bid,)))

    def held(self, ids: list[str]) -> set[str]:
        """Which of these batch ids the ledger holds (one query per CHUNK)."""
        found: set[str] = set()
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            rows = self.db.query(f"SELECT batch_id FROM ingest_batches WHERE batch_id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def claim(self, cur: Any, bid: str, bucket: str, key: str, etag: str, now: str, force: bool) -> bool:
        """In the load's transaction, before it applies anything: insert the object's row (a
        concurrent load of the same object waits on it). False when the row exists and the load is
        not forced (nothing to do); a forced load counts one more load in it."""
        sql = self.db.sql(
            "INSERT INTO ingest_batches (batch_id, bucket, object_key, etag, applied, stale, rejected, "
            "loads, first_loaded_at, last_loaded_at) VALUES (%s, %s, %s, %s, 0, 0, 0, 1, %s, %s)"
        )
        try:
            cur.execute(sql, (bid, bucket, key[:1024], etag[:128], now, now))
            return True
        except Exception as exc:
            if not self.db.is_duplicate_key(exc):
                raise
        if not force:
            return False
        cur.execute(
            self.db.sql("UPDATE ingest_batches SET loads = loads + 1, last_loaded_at = %s WHERE batch_id = %s"),
            (now, bid),
        )
        return True

    def counted(self, cur: Any, bid: str, applied: int, stale: int, rejected: int) -> None:
        """The load's last statement: what it applied, found stale and rejected."""
        cur.execute(
            self.db.sql("UPDATE ingest_batches SET applied = %s, stale = %s, rejected = %s WHERE batch_id = %s"),
            (applied, stale, rejected, bid),
        )
