"""Recording pending writes never fails a write: a Redis failure is logged and counted as the EMF
metric PendingRecordFailures, and while the breaker is open Redis is not even tried."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.commands import make_command
from chalicelib.ids import VersionClock, new_op_id, uuid7
from chalicelib.models import validate_todo
from chalicelib.readers import Filters, Reader, Row
from chalicelib.readers.cache import Breaker, CachedReader, todo_key
from chalicelib.readers.pending import PendingWrites, pending_key
from chalicelib.readers.scripts import RECORD

clock = VersionClock()


class Nothing(Reader):
    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        return None

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        return []


class Client:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> Any:
        self.calls.append(args)
        if self.fail:
            raise ConnectionError("redis is down")
        return 1


def command(owner: str = "alice") -> Any:
    return make_command("put", "todos", owner, uuid7(), clock.next(), new_op_id(), validate_todo({"title": "t"}))


def test_one_evalsha_per_request_after_acceptance():
    client = Client(fail=False)
    pending = PendingWrites(CachedReader(Nothing(), client, 300), 900)
    batch = [command(), command()]
    assert pending.record(batch)
    assert len(client.calls) == 1
    name, _sha, nkeys, key, ttl, *entries = client.calls[0]
    assert (name, nkeys, key, ttl) == ("EVALSHA", 1, pending_key("alice", "sluice:v1"), 900_000)
    assert entries[0] == f"t:{batch[0].id}" and entries[5] == f"t:{batch[1].id}" and len(entries) == 10
    assert "PEXPIRE" in RECORD
    # New ids (a POST's): their cache entries are keys of the same EVALSHA, the negative TTL last
    assert pending.record(batch, new_ids=True) and len(client.calls) == 2
    name, _sha, nkeys, *rest = client.calls[1]
    keys, args = rest[:nkeys], rest[nkeys:]
    assert keys == [pending_key("alice", "sluice:v1"), *(todo_key("alice", c.id) for c in batch)]
    assert args[:-1] == [900_000, *entries] and args[-1] == pending.cache.negative_ttl_ms == 60_000


def test_a_redis_failure_is_counted_in_an_emf_metric_and_not_raised(capsys, monkeypatch):
    monkeypatch.setenv("SLUICE_LOG", "1")
    client = Client(fail=True)
    breaker = Breaker(cooldown=60, clock=lambda: 0.0)
    pending = PendingWrites(CachedReader(Nothing(), client, 300, breaker=breaker), 900)
    assert pending.record([command()]) is False
    assert pending.record([command(), command()]) is False  # breaker open: Redis not tried
    assert len(client.calls) == 1 and pending.failures == 3
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "PendingRecordFailures" in line]
    assert [line["PendingRecordFailures"] for line in lines] == [1, 2]
    metric = lines[0]["_aws"]["CloudWatchMetrics"][0]
    assert metric["Metrics"] == [{"Name": "PendingRecordFailures", "Unit": "Count"}]


@pytest.mark.parametrize("ttl", [0, -1])
def test_the_ttl_must_be_positive(ttl):
    with pytest.raises(ValueError):
        PendingWrites(CachedReader(Nothing(), Client(False), 300), ttl)


def test_pending_ttl_seconds_is_read_once_from_the_environment():
    from chalicelib.config import ConfigError, Settings

    assert Settings.from_env({}).pending_ttl_seconds == 900
    assert Settings.from_env({"PENDING_TTL_SECONDS": "60"}).pending_ttl_seconds == 60
    for bad in ("0", "-5", "ten", "9999999"):
        with pytest.raises(ConfigError):
            Settings.from_env({"PENDING_TTL_SECONDS": bad})
