"""The read cache as production wires it (bootstrap.build with CACHE_URL): reads go through Redis,
and every load that commits fences the keys it changed, so a write is never hidden by the cache."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import auth, body


@pytest.fixture
def cached_client(redis_server: str, local_dir: Any) -> Iterator[Any]:
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    built = bootstrap.build(Settings.from_env({"LOCAL_DATA_DIR": str(local_dir), "CACHE_URL": redis_server}))
    bootstrap.use(built)
    try:
        with Client(app_module.app) as client:
            yield client, built
    finally:
        bootstrap.reset()


def test_reads_are_served_from_redis_and_loads_fence_what_they_change(cached_client, redis_server):
    from chalicelib.readers.cache import CachedReader, todo_key
    from chalicelib.readers.resp import RespClient

    client, built = cached_client
    assert isinstance(built.reader, CachedReader) and built.loader.on_commit is not None
    sub = f"cache-{uuid.uuid4()}"
    redis = RespClient.from_url(redis_server)
    todo_id = client.http.post("/todos", headers=auth(sub), body=body({"title": "v1"})).json_body["id"]
    assert client.http.get(f"/todos/{todo_id}", headers=auth(sub)).json_body["title"] == "v1"
    cached = redis.execute_command("GET", todo_key(sub, todo_id))
    assert cached is not None and b"v1" in cached  # the read filled the cache

    # WHEN the todo changes (the local transport loads it at once, then the loader fences the key)
    second = client.http.put(f"/todos/{todo_id}", headers=auth(sub), body=body({"title": "v2"})).json_body
    # THEN no read serves the old row, and the next read caches the new one
    got = client.http.get(f"/todos/{todo_id}", headers=auth(sub)).json_body
    assert got["title"] == "v2" and got["version"] == second["version"]
    assert b"v2" in redis.execute_command("GET", todo_key(sub, todo_id))

    client.http.delete(f"/todos/{todo_id}", headers=auth(sub, json_body=False))
    assert client.http.get(f"/todos/{todo_id}", headers=auth(sub)).status_code == 404


def test_a_dead_redis_degrades_to_database_reads(local_dir):
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    settings = Settings.from_env({"LOCAL_DATA_DIR": str(local_dir), "CACHE_URL": "redis://127.0.0.1:1/0"})
    bootstrap.use(bootstrap.build(settings))
    try:
        with Client(app_module.app) as client:
            todo_id = client.http.post("/todos", headers=auth(), body=body({"title": "x"})).json_body["id"]
            for _ in range(3):
                response = client.http.get(f"/todos/{todo_id}", headers=auth())
                assert response.status_code == 200 and response.json_body["title"] == "x"
    finally:
        bootstrap.reset()
