"""Rows a merged page replaces read thin (`packets.thin_values`, `read_rows` with a connection's
`sluice_thin`): the columns kept hold what `row_values` reads, the others None; a row with a long
value, one cut short, or one not older than the write that replaces it is read whole."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.db.packets import Thin, read_rows, row_values, thin_values

CONVERTERS = [
    ("utf8", None),
    ("utf8", None),
    (None, None),
    ("utf8", int),
    ("utf8", None),
]  # id, title, bytes, version, created
KEEP = frozenset({0, 3, 4})

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


@given(
    st.text("0123456789abcdef-", min_size=1, max_size=36),
    texts,
    blobs,
    st.integers(-(10**15), 10**15),
    st.one_of(st.none(), st.text("0123456789-: .", max_size=26)),
    st.integers(4, 5),
)
def test_thin_values_keep_what_row_values_read(id_: str, title: Any, blob: Any, version: int, created: Any, n: int):
    """Over any values, NULLs and long values, and a packet with fewer values than columns."""
    items = [id_.encode(), title, blob, str(version).encode(), None if created is None else created.encode()][:n]
    data = packet(items)
    whole = row_values(data, CONVERTERS)
    thin = thin_values(data, CONVERTERS, KEEP)
    if thin is not None:
        assert whole is not None and len(thin) == len(whole) == len(CONVERTERS)
        assert all(thin[i] == (whole[i] if i in KEEP else None) for i in range(len(CONVERTERS)))
    else:  # a long value, or a short packet: read whole (by row_values or PyMySQL)
        assert n < len(CONVERTERS) or any(item is not None and len(item) >= 251 for item in items)


class Result:
    """What read_rows needs of a MySQLResult whose connection asks for thin rows."""

    def __init__(self, thin: Thin | None) -> None:
        self.connection = type("Conn", (), {"encoding": "utf8", "sluice_thin": thin})()
        self.converters = CONVERTERS
        self.whole: list[bytes] = []

    def _check_packet_is_eof(self, packet: Any) -> None:
        pass

    def _read_row_from_packet(self, packet: Any) -> tuple[Any, ...]:
        self.whole.append(packet)
        return ("parsed by PyMySQL",)


def test_read_rows_reads_thin_only_the_rows_older_than_their_replacing_write():
    rows = [
        [b"a", b"title a", b"x", b"5", b"2026-01-01 00:00:00.000001"],  # older than 9: thin
        [b"b", b"title b", b"x", b"9", b"2026-01-01 00:00:00.000002"],  # as new as 9: whole
        [b"c", b"title c", b"x", b"-3", b"2026-01-01 00:00:00.000003"],  # a tombstone (negated): thin
        [b"d", b"title d", b"x", b"1", b"2026-01-01 00:00:00.000004"],  # not named: whole
        [b"e", b"t" * 300, b"x", b"1", b"2026-01-01 00:00:00.000005"],  # a long value: PyMySQL's
    ]
    packets = [packet(r) for r in rows] + [b"\xfe\x00\x00\x02\x00"]
    result = Result(Thin({b"a": 9, b"b": 9, b"c": 9, b"e": 9}, 3, KEEP))
    read_rows(result, iter(packets).__next__, lambda data, encoding: data)
    got = result.rows  # type: ignore[attr-defined]
    assert got[0] == ("a", None, None, 5, "2026-01-01 00:00:00.000001")
    assert got[1] == ("b", "title b", b"x", 9, "2026-01-01 00:00:00.000002")
    assert got[2] == ("c", None, None, -3, "2026-01-01 00:00:00.000003")
    assert got[3] == ("d", "title d", b"x", 1, "2026-01-01 00:00:00.000004")
    assert got[4] == ("parsed by PyMySQL",) and result.whole == [packets[4]]
    plain = Result(None)
    read_rows(plain, iter(packets).__next__, lambda data, encoding: data)
    assert plain.rows[0] == ("a", "title a", b"x", 5, "2026-01-01 00:00:00.000001")  # type: ignore[attr-defined]
