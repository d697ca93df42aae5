"""A reader connection's rows read off the packets (`packets.row_values`, `packets.read_rows`),
as PyMySQL's `MySQLResult._read_row_from_packet` reads them: each value decoded and converted,
NULL as None, a packet with fewer values ending the row; a row with a value of 251 bytes or more
is left to PyMySQL."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.db.packets import read_rows, row_values

CONVERTERS = [
    ("utf8", None),
    ("utf8", None),
    (None, None),
    ("utf8", int),
    ("utf8", None),
]  # id, title, bytes, version, created

texts = st.one_of(st.none(), st.text(max_size=300).map(str.encode))  # a utf8 column's, as the server sends it
blobs = st.one_of(st.none(), st.binary(max_size=300))


def packet(items: list[bytes | None]) -> bytes:
    out = b""
    for item in items:
        if item is None:
            out += b"\xfb"
        elif len(item) < 251:
            out += bytes([len(item)]) + item
        else:
            out += b"\xfc" + len(item).to_bytes(2, "little") + item
    return out


def expected(items: list[bytes | None]) -> tuple[Any, ...]:
    """What PyMySQL makes of the values, column by column."""
    out: list[Any] = []
    for item, (encoding, converter) in zip(items, CONVERTERS, strict=False):  # a short packet has fewer
        value: Any = item
        if item is not None:
            value = item.decode(encoding) if encoding else item
            value = converter(value) if converter else value
        out.append(value)
    return tuple(out)


@given(
    st.text("0123456789abcdef-", min_size=1, max_size=36),
    texts,
    blobs,
    st.integers(-(10**15), 10**15),
    st.one_of(st.none(), st.text("0123456789-: .", max_size=26)),
    st.integers(4, 5),
)
def test_row_values_read_what_pymysql_reads(id_: str, title: Any, blob: Any, version: int, created: Any, n: int):
    """Over any values, NULLs and long values, and a packet with fewer values than columns."""
    items = [id_.encode(), title, blob, str(version).encode(), None if created is None else created.encode()][:n]
    got = row_values(packet(items), CONVERTERS)
    if any(item is not None and len(item) >= 251 for item in items):
        assert got is None  # left to PyMySQL
    else:
        assert got == expected(items)


class Result:
    """What read_rows needs of a MySQLResult."""

    def __init__(self) -> None:
        self.connection = type("Conn", (), {"encoding": "utf8"})()
        self.converters = CONVERTERS
        self.whole: list[bytes] = []
        self.eof: list[bytes] = []

    def _check_packet_is_eof(self, packet: Any) -> None:
        self.eof.append(packet)

    def _read_row_from_packet(self, packet: Any) -> tuple[Any, ...]:
        self.whole.append(packet)
        return ("parsed by PyMySQL",)


def test_read_rows_reads_each_row_until_eof_and_leaves_long_values_to_pymysql():
    rows = [
        [b"a", b"title a", b"x", b"5", b"2026-01-01 00:00:00.000001"],
        [b"b", None, None, b"-3", b"2026-01-01 00:00:00.000002"],  # NULLs, a negated version
        [b"e", b"t" * 300, b"x", b"1", b"2026-01-01 00:00:00.000005"],  # a long value: PyMySQL's
    ]
    packets = [packet(r) for r in rows] + [b"\xfe\x00\x00\x02\x00"]
    result = Result()
    read_rows(result, iter(packets).__next__, lambda data, encoding: data)
    got = result.rows  # type: ignore[attr-defined]
    assert got[0] == ("a", "title a", b"x", 5, "2026-01-01 00:00:00.000001")
    assert got[1] == ("b", None, None, -3, "2026-01-01 00:00:00.000002")
    assert got[2] == ("parsed by PyMySQL",) and result.whole == [packets[2]]
    assert result.eof == [packets[3]] and result.affected_rows == 3  # type: ignore[attr-defined]
    assert result.connection is None  # as PyMySQL leaves a result read to its end
