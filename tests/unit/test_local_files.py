"""LOAD DATA LOCAL sends only the files the loader names (chalicelib/db/local_files.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pymysql.err import OperationalError

from chalicelib.db import local_files


class Conn:
    """Stands for a PyMySQL connection: only the attribute the guard reads is used."""


def sender() -> tuple[Any, list[tuple[Any, Any]]]:
    sent: list[tuple[Any, Any]] = []
    return local_files.guarded(lambda filename, conn: sent.append((filename, conn))), sent


def test_a_protected_connection_sends_only_the_file_its_statement_named() -> None:
    send, sent = sender()
    conn = local_files.protect(Conn())
    for asked in ("/proc/self/environ", b"/proc/self/environ", "/tmp/sluice-load-a.tsv"):
        with pytest.raises(OperationalError, match="refused") as refused:
            send(asked, conn)
        assert refused.value.args[0] == local_files.FILE_REFUSED and "refused" in refused.value.args[1]
    assert sent == []
    with local_files.sending(conn, "/tmp/sluice-load-a.tsv"):
        send(b"/tmp/sluice-load-a.tsv", conn)  # the server names it in bytes
        with pytest.raises(OperationalError, match="refused"):
            send(b"/proc/self/environ", conn)  # still only that one
    assert sent == [(b"/tmp/sluice-load-a.tsv", conn)]
    with pytest.raises(OperationalError, match="refused"):
        send(b"/tmp/sluice-load-a.tsv", conn)  # and only while its statement runs


def test_a_connection_sluice_did_not_open_keeps_pymysqls_behaviour() -> None:
    send, sent = sender()
    conn = Conn()
    with local_files.sending(conn, "/tmp/x"):
        send("/anything", conn)
    assert sent == [("/anything", conn)]


def test_the_guard_wraps_pymysqls_sender_once() -> None:
    from pymysql import connections

    assert local_files.install() is True
    assert getattr(connections._send_local_file, "sluice_guard", False)
    wrapped = connections._send_local_file
    assert local_files.install() is True and connections._send_local_file is wrapped


def test_without_a_sender_to_wrap_connections_open_without_local_infile(monkeypatch: pytest.MonkeyPatch) -> None:
    from pymysql import connections

    from chalicelib.db.database import open_master

    monkeypatch.delattr(connections, "_send_local_file")
    monkeypatch.setattr(local_files, "_installed", None)
    assert local_files.install() is False
    db = open_master("mysql://root@db.example.com:3306/app")
    assert db.local_infile and db._connect_kwargs(None)["local_infile"] is False  # type: ignore[attr-defined]


class PacketConn:
    """Stands for a PyMySQL connection sending a LOAD DATA LOCAL file: its packets are kept."""

    def __init__(self, max_allowed_packet: int = 16 * 1024 * 1024) -> None:
        self.max_allowed_packet = max_allowed_packet
        self.packets: list[bytes] = []

    def write_packet(self, payload: Any) -> None:
        self.packets.append(bytes(payload))


def test_bytes_named_for_a_statement_are_sent_from_memory_in_big_packets_and_only_then() -> None:
    send, sent = sender()
    conn = local_files.protect(PacketConn())
    data = bytes(range(256)) * (5 * 1024 + 7)  # 1.25 MiB and a bit: three packets
    with local_files.sending(conn, "sluice-chunk-1.tsv", data):
        send(b"sluice-chunk-1.tsv", conn)
        with pytest.raises(OperationalError, match="refused"):
            send(b"/proc/self/environ", conn)  # still only that one
    assert sent == []  # PyMySQL's file sender never ran: nothing was read from disk
    assert [len(p) for p in conn.packets] == [local_files.PACKET_BYTES] * 2 + [len(data) - 2 * local_files.PACKET_BYTES]
    assert b"".join(conn.packets) == data
    with pytest.raises(OperationalError, match="refused"):
        send(b"sluice-chunk-1.tsv", conn)  # and only while its statement runs
    assert getattr(conn, local_files.ALLOWED) == {}


def test_packets_stay_below_the_connections_max_allowed_packet() -> None:
    send, _ = sender()
    conn = local_files.protect(PacketConn(max_allowed_packet=1000))
    data = b"row\n" * 1000
    with local_files.sending(conn, "chunk", data):
        send("chunk", conn)
    assert max(len(p) for p in conn.packets) == 999 and b"".join(conn.packets) == data


def test_bytes_sent_on_a_connection_without_an_allow_list_give_it_one() -> None:
    send, sent = sender()
    conn = PacketConn()
    with local_files.sending(conn, "chunk", b"a\tb\n"):
        send(b"chunk", conn)
        with pytest.raises(OperationalError, match="refused"):
            send(b"/etc/passwd", conn)  # no longer PyMySQL's send-anything behaviour
    assert conn.packets == [b"a\tb\n"] and sent == []
