"""CACHE_URL is parsed once (readers/resp.CacheUrl) into the client's options and the breaker's
cool-down, and bootstrap builds the cache from that one parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib import bootstrap
from chalicelib.config import Settings
from chalicelib.readers.breaker import DEFAULT_COOLDOWN_SECONDS
from chalicelib.readers.cache import CachedReader
from chalicelib.readers.resp import CacheUrl


def test_one_parse_gives_the_client_and_the_cooldown() -> None:
    url = CacheUrl.parse("rediss://user:p%40ss@cache.example:6380/2?timeout=0.5&connect_timeout=0.25&cooldown=7")
    assert (url.host, url.port, url.db, url.username, url.password, url.tls) == (
        "cache.example",
        6380,
        2,
        "user",
        "p@ss",
        True,
    )
    assert (url.timeout, url.connect_timeout, url.cooldown) == (0.5, 0.25, 7.0)
    client = url.client()
    assert (client.host, client.port, client.db, client.tls, client.timeout) == ("cache.example", 6380, 2, True, 0.5)
    assert client.connects == 0  # nothing connects until the first command


def test_defaults_and_refusals() -> None:
    url = CacheUrl.parse("redis://localhost")
    assert (url.port, url.db, url.tls, url.cooldown) == (6379, 0, False, DEFAULT_COOLDOWN_SECONDS)
    with pytest.raises(ValueError, match="redis://"):
        CacheUrl.parse("http://localhost")


def test_bootstrap_wires_one_client_and_breaker_from_cache_url(tmp_path: Path) -> None:
    settings = Settings.from_env({"LOCAL_DATA_DIR": str(tmp_path), "CACHE_URL": "redis://127.0.0.1:1/0?cooldown=3"})
    built = bootstrap.build(settings)
    try:
        assert isinstance(built.reader, CachedReader)
        assert built.reader.breaker.cooldown == 3
        assert built.service.pending is not None and built.service.pending.client is built.reader.client
        assert built.reader.client.connects == 0
    finally:
        built.master.discard()
