"""The cached read by key's own pieces (`PendingWrites.get`): the cache entry parsed straight into
a Seen (`cache.cached_seen`) as `parse_entry` reads it, a payload decoded as json.loads decodes
it (`cache.load_payload`), the two replies read in one pass whatever chunks they arrive in
(`RespClient.pair`), and the keys kept per row, bounded and forgotten when a resource changes."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from chalicelib.readers import Seen
from chalicelib.readers import pending as pending_module
from chalicelib.readers.cache import UNKNOWN, cached_seen, entry_key, load_payload, parse_entry
from chalicelib.readers.pending_entry import field_of, pending_key
from chalicelib.readers.resp import RespClient
from chalicelib.readers.resp_wire import RespError, encode_command
from chalicelib.readers.scripts import pair_payload
from chalicelib.resources import RESOURCES, declare, forget

ROW = b'{"id":"x","title":"caf\xc3\xa9","version":3}'
ENTRIES: list[Any] = [
    None,
    b"",
    b"p|3|op-3|" + ROW,
    bytearray(b"p|3|op-3|" + ROW),
    b"p|3||" + ROW,
    b"a|4|op-4|",
    b"a|4|op-4|2024-01-01T00:00:00Z",
    b"m|5|op-5|",
    b"m|x|op-5|",
    b"p|3|op-3| " + ROW + b" ",  # whitespace around the JSON: json.loads takes it
    b"p|3|op-3|" + ROW + b"x",  # trailing garbage
    b"p|3|op-3|" + json.dumps({"a": 1}).encode("utf-16"),  # json.loads detects UTF-16
    b"p|3|op-3|\xff\xfe",
    b"p|3|op-3|[1,2]",
    b"p|x|op-3|{}",
    b"p|3|op-\xc3\xa9|{}",
    b"p|3|op",
    b"x|3|op-3|{}",
]


@pytest.mark.parametrize("raw", ENTRIES)
def test_cached_seen_reads_what_parse_entry_reads(raw: Any) -> None:
    entry = parse_entry(raw)
    expected = None if entry is None or entry[0] == UNKNOWN else Seen("x", entry[3], entry[1], entry[2])
    assert cached_seen("x", raw) == expected


@pytest.mark.parametrize(
    "payload", [ROW, b" {} ", b"[]", b'"s"', b"{}x", b"\xff", '{"a":"\ud800"}'.encode("utf-8", "surrogatepass")]
)
def test_load_payload_is_json_loads(payload: bytes) -> None:
    try:
        expected: Any = json.loads(payload)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            load_payload(payload)
    else:
        assert load_payload(payload) == expected


class ChunkedSocket:
    """A socket whose replies arrive in the given chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def close(self) -> None:
        self.chunks = []


def client_over(chunks: list[bytes]) -> tuple[RespClient, ChunkedSocket]:
    client = RespClient(port=1)  # a retry (after a bad reply) finds no server
    sock = ChunkedSocket(chunks)
    client._sock, client._pid = sock, os.getpid()  # type: ignore[assignment]
    return client, sock


REPLIES = [
    (b"$-1\r\n$-1\r\n", [None, None]),
    (b"$-1\r\n$5\r\nab|cd\r\n", [None, b"ab|cd"]),
    (b"$3\r\nx|y\r\n$0\r\n\r\n", [b"x|y", b""]),
    (b"-WRONGTYPE no\r\n$2\r\nok\r\n", [RespError("WRONGTYPE no"), b"ok"]),
    (b":1\r\n+OK\r\n", [1, b"OK"]),
]


@pytest.mark.parametrize(("wire", "expected"), REPLIES)
@pytest.mark.parametrize("cut", [None, 1, 3, 5, 8, -3, -1])
def test_pair_reads_both_replies_in_any_chunks(wire: bytes, expected: list[Any], cut: int | None) -> None:
    chunks = [wire] if cut is None else [wire[:cut], wire[cut:]]
    client, sock = client_over(chunks)
    payload = pair_payload("k", "h", "f")
    assert payload == encode_command(("HGET", "h", "f")) + encode_command(("GET", "k"))
    replies = client.pair(payload)
    assert sock.sent == payload
    assert [(type(r), str(r)) if isinstance(r, RespError) else r for r in replies] == [
        (type(r), str(r)) if isinstance(r, RespError) else r for r in expected
    ]


def test_pair_rejects_a_bulk_string_without_its_crlf() -> None:
    client, _ = client_over([b"$2\r\nabXX$-1\r\n"])
    with pytest.raises(ConnectionError):
        client.pair(pair_payload("k", "h", "f"))


def test_keys_are_built_once_bounded_and_forgotten_when_a_resource_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = pending_module.KEYS
    keys.clear()
    made = pending_module.keys_of("pre:v1", "todos", "alice", "t1")
    assert made.key == entry_key("todos", "alice", "t1", "pre:v1")
    assert made.hash_key == pending_key("alice", "pre:v1")
    assert made.field == field_of(RESOURCES["todos"], "t1")
    assert made.payload == pair_payload(made.key, made.hash_key, made.field)
    assert keys.entries[("pre:v1", "todos", "alice", "t1")] is made
    monkeypatch.setattr(keys, "size", 3)
    for i in range(5):
        pending_module.keys_of("pre:v1", "todos", "bob", f"t{i}")
    assert len(keys.entries) == 3 and ("pre:v1", "todos", "bob", "t4") in keys.entries
    profiles = RESOURCES["profiles"]
    declare(profiles)  # any (re)declaration: entry keys name a resource's shape
    assert keys.entries == {}
    forget("nothing-declared")
