"""`scripts.read_pair` against the real Redis server: with RespClient (two commands in one write,
no script) it answers what the READ_PAIR script answers, for every combination of a cache entry
and a pending entry being there or not, and raises an error reply as the script does."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chalicelib.readers.resp import RespClient
from chalicelib.readers.resp_wire import RespError
from chalicelib.readers.scripts import READ_PAIR, read_pair, run_script

pytestmark = pytest.mark.redis


class NotResp:
    """Any other client (redis-py's shape): read_pair runs the script through it."""

    def __init__(self, inner: RespClient) -> None:
        self.inner = inner
        self.commands: list[str] = []

    def execute_command(self, *args: Any) -> Any:
        self.commands.append(args[0])
        return self.inner.execute_command(*args)


@pytest.mark.parametrize("entry", [None, b"p|3|op-3|{}"])
@pytest.mark.parametrize("pending", [None, b"p|4|op-4|4|{}"])
def test_read_pair_answers_as_the_script(redis: RespClient, entry: bytes | None, pending: bytes | None) -> None:
    key, hash_key, field = (f"sluice-test-{uuid.uuid4().hex}:{name}" for name in ("entry", "pending", "field"))
    try:
        if entry is not None:
            redis.execute_command("SET", key, entry)
        if pending is not None:
            redis.execute_command("HSET", hash_key, field, pending)
        by_script = list(run_script(redis, READ_PAIR, [key, hash_key], [field]))
        assert read_pair(redis, key, hash_key, field) == by_script == [entry, pending]
        other = NotResp(redis)
        assert read_pair(other, key, hash_key, field) == by_script
        assert other.commands[0] == "EVALSHA"
    finally:
        redis.execute_command("DEL", key, hash_key)


def test_an_error_reply_is_raised(redis: RespClient) -> None:
    key, hash_key = (f"sluice-test-{uuid.uuid4().hex}:{name}" for name in ("entry", "pending"))
    try:
        redis.execute_command("SET", hash_key, b"not a hash")
        with pytest.raises(RespError, match="WRONGTYPE"):
            read_pair(redis, key, hash_key, "field")
        with pytest.raises(RespError, match="WRONGTYPE"):
            run_script(redis, READ_PAIR, [key, hash_key], ["field"])
        assert read_pair(redis, key, "sluice-test-none", "field") == [None, None]  # the client is still usable
    finally:
        redis.execute_command("DEL", key, hash_key)
