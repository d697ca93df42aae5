"""Configuration, read once per process from the environment (CONTRACT section 6)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_MAX_BODY_BYTES = 65536
DEFAULT_CACHE_MAX_AGE = 0
DEFAULT_PENDING_TTL_SECONDS = 900  # accepted writes kept for their writer's reads (CONTRACT section 3)
# Twice the most Firehose puts in one object (128 MiB): an object that inflates beyond is refused.
DEFAULT_LOADER_MAX_OBJECT_BYTES = 256 * 1024 * 1024


class ConfigError(ValueError):
    """A configuration value that cannot be used."""


def default_local_data_dir() -> str:
    """A folder outside the project tree (chalice local reloads on any change inside it)."""
    import tempfile  # here, not at import: a process given LOCAL_DATA_DIR never needs it

    base = os.environ.get("XDG_DATA_HOME") or os.path.join(tempfile.gettempdir())
    return os.path.join(base, "sluice-local")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str
    replica_urls: tuple[str, ...]
    write_transport: str
    firehose_stream: str
    writes_bucket: str
    local_data_dir: str
    cache_url: str
    max_body_bytes: int
    cache_max_age: int
    database_secret_arn: str = ""
    cache_ttl_seconds: int = 300
    reconcile_max_objects: int = 500
    reconcile_lookback_hours: int = 48
    pending_ttl_seconds: int = DEFAULT_PENDING_TTL_SECONDS
    loader_max_object_bytes: int = DEFAULT_LOADER_MAX_OBJECT_BYTES
    # How reads reach the master, their last fallback after the replicas: DATABASE_URL unless
    # MASTER_READ_URL says otherwise (the prod stage: RDS Proxy, which pools the API's many
    # connections, while the loader, the reconciler and migrate use the instance endpoint).
    master_read_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        local_dir = env.get("LOCAL_DATA_DIR", "").strip() or default_local_data_dir()
        database_url = env.get("DATABASE_URL", "").strip() or ("sqlite:///" + os.path.join(local_dir, "sluice.sqlite3"))
        replicas = tuple(u.strip() for u in env.get("REPLICA_URLS", "").split(",") if u.strip())
        master_read_url = env.get("MASTER_READ_URL", "").strip() or database_url
        transport = env.get("WRITE_TRANSPORT", "").strip().lower() or "local"
        if transport not in ("local", "firehose"):
            raise ConfigError(f"WRITE_TRANSPORT must be 'local' or 'firehose', got {transport!r}")
        stream = env.get("FIREHOSE_STREAM", "").strip()
        if transport == "firehose" and not stream:
            raise ConfigError("WRITE_TRANSPORT=firehose needs FIREHOSE_STREAM")
        return cls(
            database_url=database_url,
            replica_urls=replicas or (master_read_url,),
            master_read_url=master_read_url,
            write_transport=transport,
            firehose_stream=stream,
            writes_bucket=env.get("WRITES_BUCKET", "").strip(),
            local_data_dir=local_dir,
            cache_url=env.get("CACHE_URL", "").strip(),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1, 10 * 1024 * 1024),
            cache_max_age=_int(env, "CACHE_MAX_AGE", DEFAULT_CACHE_MAX_AGE, 0, 31536000),
            database_secret_arn=env.get("DATABASE_SECRET_ARN", "").strip(),
            cache_ttl_seconds=_int(env, "CACHE_TTL_SECONDS", 300, 1, 86400),
            reconcile_max_objects=_int(env, "RECONCILE_MAX_OBJECTS", 500, 1, 100000),
            reconcile_lookback_hours=_int(env, "RECONCILE_LOOKBACK_HOURS", 48, 1, 24 * 366),
            pending_ttl_seconds=_int(env, "PENDING_TTL_SECONDS", DEFAULT_PENDING_TTL_SECONDS, 1, 7 * 86400),
            loader_max_object_bytes=_int(
                env, "LOADER_MAX_OBJECT_BYTES", DEFAULT_LOADER_MAX_OBJECT_BYTES, 1024, 64 * 1024**3
            ),
        )
