"""A database endpoint that drops the connection on LOAD DATA LOCAL instead of refusing it (what a
proxy in front of the master may do): the load fails as the database being unavailable, its
retry takes the fast path once more, and after a second drop the loader falls back to the
guarded multi-row upsert instead of retrying for ever.

The endpoint is a real TCP relay in front of the machine's MariaDB that reads the client's MySQL
packets and closes both sides when a `COM_QUERY` starts with `LOAD DATA` (plain TCP on loopback,
so the relay can read them); everything else passes through untouched.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from chalicelib.commands import WriteCommand, make_command
from chalicelib.db.database import Database, open_master
from chalicelib.errors import DatabaseUnavailable
from chalicelib.loader import BatchLoader, LoadResult, local_etag
from chalicelib.loader.mysql_fast import MySQLFastApplier
from tests.factories import make

pytestmark = pytest.mark.mariadb

COM_QUERY = 3


class DroppingRelay:
    """127.0.0.1:<port> -> the server; cuts a connection whose client sends LOAD DATA while `drop`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.drop = True
        self.cut = 0  # connections cut so far
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._to_client, args=(server, client), daemon=True).start()
            threading.Thread(target=self._to_server, args=(client, server), daemon=True).start()

    @staticmethod
    def _to_client(server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def _to_server(self, client: socket.socket, server: socket.socket) -> None:
        """Forward whole packets (3-byte length, sequence id, payload), looking at each one."""
        pending = b""
        try:
            while data := client.recv(65536):
                pending += data
                while len(pending) >= 4:
                    size = int.from_bytes(pending[:3], "little")
                    if len(pending) < 4 + size:
                        break
                    packet, pending = pending[: 4 + size], pending[4 + size :]
                    payload = packet[4:]
                    if (
                        self.drop
                        and payload[:1] == bytes([COM_QUERY])
                        and payload[1:].lstrip().upper().startswith(b"LOAD DATA")
                    ):
                        self.cut += 1
                        raise OSError("cut")
                    server.sendall(packet)
        except OSError:
            pass
        _close(client, server)


def _close(*ends: socket.socket) -> None:
    """Both ends, for real: shutdown sends the FIN (so the server rolls the transaction back and
    lets its locks go) and wakes the other thread's recv, which a bare close() from here would not."""
    for end in ends:
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()


@pytest.fixture
def relay(mysql_url: str) -> Iterator[DroppingRelay]:
    parts = urlsplit(mysql_url)
    assert parts.hostname and parts.port
    relay = DroppingRelay(parts.hostname, parts.port)
    yield relay
    relay.close()


@pytest.fixture
def db(mysql_url: str, relay: DroppingRelay) -> Iterator[Database]:
    parts = urlsplit(mysql_url)
    through = urlunsplit(parts._replace(netloc=f"root@127.0.0.1:{relay.port}"))
    database = open_master(through)  # plain TCP on loopback; LOAD DATA LOCAL allowed
    relay.drop = False
    database.migrate()
    relay.drop = True
    yield database
    database.discard()


def todos(n: int, version: int) -> bytes:
    commands: list[WriteCommand] = [
        make_command(
            "put",
            "todos",
            "alice",
            str(uuid.UUID(int=i + 1)),
            version,
            str(uuid.UUID(int=i + 100)),
            make("todos", title=f"t{i}"),
        )
        for i in range(n)
    ]
    return b"".join(c.to_line() for c in commands)


def load(loader: BatchLoader, body: bytes, name: str) -> LoadResult:
    return loader.load("bucket", f"writes/2027/01/15/08/{name}", local_etag(body), body)


def test_a_second_drop_in_a_row_sends_the_load_to_the_guarded_upsert(db, relay):
    applier = MySQLFastApplier(db, min_rows=1, chunk_lines=2, threaded=True)
    loader = BatchLoader(db, applier)
    body = todos(6, 1_800_000_000_000_001)

    # The first drop: the load fails as the database being unavailable, nothing of it applied
    with pytest.raises(DatabaseUnavailable):
        load(loader, body, "dropped")
    assert relay.cut == 1 and applier.fast_allowed  # its retry tries the fast path once more
    # The retry drops too: it fails the same way, and the fast path is given up for a while
    with pytest.raises(DatabaseUnavailable):
        load(loader, body, "dropped")
    assert relay.cut == 2 and not applier.fast_allowed and applier.paths["dropped"] == 1
    relay.drop = False
    assert db.query("SELECT COUNT(*) FROM todos") == [(0,)]
    relay.drop = True

    # The next attempt takes the guarded upsert: no LOAD DATA is sent, and it lands whole
    result = load(loader, body, "dropped")
    assert (result.applied, result.stale, result.rejected) == (6, 0, 0)
    assert relay.cut == 2
    assert db.query("SELECT COUNT(*), MIN(version) FROM todos") == [(6, 1_800_000_000_000_001)]


def test_a_drop_followed_by_a_fast_load_that_succeeds_starts_the_count_again(db, relay):
    applier = MySQLFastApplier(db, min_rows=1, chunk_lines=2, threaded=True)
    loader = BatchLoader(db, applier)
    with pytest.raises(DatabaseUnavailable):
        load(loader, todos(6, 1_800_000_000_000_001), "first")
    relay.drop = False  # a transient drop (a failover, say): the retry goes through
    assert load(loader, todos(6, 1_800_000_000_000_001), "first").applied == 6
    relay.drop = True
    with pytest.raises(DatabaseUnavailable):  # one drop since the last success: fast path kept
        load(loader, todos(6, 1_800_000_000_000_002), "second")
    assert applier.fast_allowed and relay.cut == 2
