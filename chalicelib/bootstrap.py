"""The composition root: builds readers, writers and the loader from Settings, lazily, once per
process. Tests hand in their own with `use()` and drop them with `reset()`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from chalicelib.config import Settings
from chalicelib.db.database import Database, open_master, open_reader
from chalicelib.ids import VersionClock
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.readers import TodoReader
from chalicelib.readers.sql import SqlReader
from chalicelib.service import TodoService
from chalicelib.writers import CommandWriter


@dataclass
class Services:
    settings: Settings
    master: Database
    reader: TodoReader
    writer: CommandWriter
    loader: BatchLoader
    service: TodoService
    extras: dict[str, Any] = field(default_factory=dict)


def build(
    settings: Settings | None = None, writer: CommandWriter | None = None, reader: TodoReader | None = None
) -> Services:
    settings = settings or Settings.from_env()
    master = open_master(settings.database_url, settings.database_secret_arn)
    cache = None
    if settings.cache_url:  # the optional Redis read cache: reads through it, loads keep it right
        from chalicelib.readers.cache import build_cache

        cache = build_cache(settings)
    loader = BatchLoader(
        master, on_commit=cache[1] if cache else None, max_object_bytes=settings.loader_max_object_bytes
    )
    built_reader = reader is None
    if reader is None:
        if master.dialect == "sqlite":
            reader = SqlReader(master)
        else:
            # Reads get databases of their own (autocommit, short timeouts), the master last.
            from chalicelib.readers.replicas import ReplicaReader

            reader = ReplicaReader.from_urls(
                settings.replica_urls,
                settings.database_url,
                open_db=lambda url: open_reader(url, settings.database_secret_arn),
            )
    pending = None
    if cache is not None and built_reader:
        cached = cache[0](reader)
        reader = cached
        # Accepted writes kept beside the cache for their writer's reads (CONTRACT section 3).
        from chalicelib.readers.pending import PendingWrites

        pending = PendingWrites(cached, settings.pending_ttl_seconds)
    if writer is None:
        writer = _writer(settings, loader)
    service = TodoService(reader, writer, VersionClock(), pending)
    return Services(settings, master, reader, writer, loader, service)


def _writer(settings: Settings, loader: BatchLoader) -> CommandWriter:
    if settings.write_transport == "firehose":
        from chalicelib.writers.firehose import FirehoseWriter

        return FirehoseWriter.from_settings(settings)
    from chalicelib.writers.local import LOCAL_BUCKET, LocalWriter

    def load(key: str, body: bytes) -> object:
        return loader.load(LOCAL_BUCKET, key, local_etag(body), body)

    return LocalWriter(settings.local_data_dir, load=load)


_lock = threading.Lock()
_services: Services | None = None


def services() -> Services:
    global _services
    current = _services
    if current is None:
        with _lock:
            if _services is None:
                _services = build()
            current = _services
    return current


def use(value: Services) -> None:
    global _services
    _services = value


def reset() -> None:
    global _services
    _services = None
