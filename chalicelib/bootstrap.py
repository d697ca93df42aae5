"""The composition root: builds readers, writers and the loader from Settings, lazily, once per
process. Tests hand in their own with `use()` and drop them with `reset()`.

The loader (`chalicelib.loader`, with its ledger, attempts and deferral log) is built on first
use of `Services.loader`: a GET never loads, so its cold start does not import it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chalicelib.aws import AWS_CLIENTS
from chalicelib.config import Settings
from chalicelib.db.database import Database, open_master, open_reader
from chalicelib.ids import VersionClock
from chalicelib.readers import Reader
from chalicelib.readers.sql import SqlReader
from chalicelib.service import Service
from chalicelib.writers import CommandWriter

if TYPE_CHECKING:  # imported when the loader is first built: a GET never needs it
    from chalicelib.loader import BatchLoader


@dataclass
class Services:
    settings: Settings
    master: Database
    reader: Reader
    writer: CommandWriter
    service: Service
    the_loader: Callable[[], BatchLoader] = field(repr=False)  # builds it once (`once`)

    @property
    def loader(self) -> BatchLoader:
        """The loader of this process's master, built on first use (and the same one after)."""
        return self.the_loader()


def once(make: Callable[[], BatchLoader]) -> Callable[[], BatchLoader]:
    """`make`, called on the first call only (under a lock); later calls return its result."""
    made: list[BatchLoader] = []
    lock = threading.Lock()

    def get() -> BatchLoader:
        if not made:
            with lock:
                if not made:
                    made.append(make())
        return made[0]

    return get


def build(
    settings: Settings | None = None, writer: CommandWriter | None = None, reader: Reader | None = None
) -> Services:
    settings = settings or Settings.from_env()
    master = open_master(settings.database_url, settings.database_secret_arn)
    cache = None
    if settings.cache_url:  # the optional Redis read cache: reads through it, loads keep it right
        from chalicelib.readers.cache import build_cache
        from chalicelib.readers.resp import CacheUrl

        cache_url = CacheUrl.parse(settings.cache_url)  # nothing connects until the first command
        cache = build_cache(cache_url.client(), settings.cache_ttl_seconds, cache_url.cooldown)
    built_reader = reader is None
    if reader is None:
        if master.dialect == "sqlite":
            reader = SqlReader(master)
        else:
            # Reads get databases of their own (autocommit, short timeouts), the master last (as
            # MASTER_READ_URL reaches it: RDS Proxy in the prod stage; `master`, which loads, is
            # DATABASE_URL, the instance endpoint).
            from chalicelib.readers.replicas import ReplicaReader

            reader = ReplicaReader.from_urls(
                settings.replica_urls,
                settings.master_read_url or settings.database_url,
                open_db=lambda url: open_reader(url, settings.database_secret_arn),
            )
    pending = None
    if cache is not None and built_reader:
        cached = cache[0](reader)
        reader = cached
        # Accepted writes kept beside the cache for their writer's reads (CONTRACT section 3).
        from chalicelib.readers.pending import PendingWrites

        pending = PendingWrites(cached, settings.pending_ttl_seconds)
    on_commit = cache[1] if cache else None

    def make_loader() -> BatchLoader:
        from chalicelib.loader import BatchLoader

        return BatchLoader(master, on_commit=on_commit, max_object_bytes=settings.loader_max_object_bytes)

    loader = once(make_loader)
    if writer is None:
        writer = _writer(settings, loader)
    service = Service(reader, writer, VersionClock(), pending)
    return Services(settings, master, reader, writer, service, loader)


# `migrate` waits for each statement as long as it may run: an ALTER TABLE of a big table sends
# nothing until it ends, and the master's usual read timeout (MASTER_OPTIONS, 40 s) would give it
# up half-way.
MIGRATE_MARGIN_SECONDS = 20.0  # the migrate function reports a timeout before Lambda stops it
MIGRATE_MIN_READ_TIMEOUT = 60.0
MIGRATE_CLI_SECONDS = 6 * 3600.0  # `python -m chalicelib.cli migrate`: no function timeout bounds it


def migration_master(settings: Settings, seconds_left: float) -> Database:
    """The master as `migrate` uses it: its own connection, whose reads wait `seconds_left` less a
    margin (and never less than 60 s)."""
    read_timeout = max(MIGRATE_MIN_READ_TIMEOUT, seconds_left - MIGRATE_MARGIN_SECONDS)
    return open_master(settings.database_url, settings.database_secret_arn, read_timeout=read_timeout)


def migrate_schema(seconds_left: float, settings: Settings | None = None) -> list[int]:
    """Create or upgrade the master's schema (the migrate function), within `seconds_left`."""
    db = migration_master(settings or Settings.from_env(), seconds_left)
    try:
        return db.migrate()
    finally:
        db.discard()


def _writer(settings: Settings, loader: Callable[[], BatchLoader]) -> CommandWriter:
    """The write transport; the local one loads each object at once with `loader()`."""
    if settings.write_transport == "firehose":
        from chalicelib.writers.firehose import FirehoseWriter

        return FirehoseWriter.from_settings(settings, AWS_CLIENTS["firehose"].get)
    from chalicelib.writers.local import LOCAL_BUCKET, LocalWriter

    def load(key: str, body: bytes) -> object:
        from chalicelib.loader import local_etag

        return loader().load(LOCAL_BUCKET, key, local_etag(body), body)

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
