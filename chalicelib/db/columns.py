"""Reader connections that parse each result column's description once, not on every query.

A MySQL text-protocol result set starts with one column-definition packet per column, and the
server sends them again with every result. PyMySQL parses each packet into a
`FieldDescriptorPacket` and picks the column's decoder, on every query: for the 9-column GET of
one todo that was about a third of the client's CPU time for the whole query (~32 µs of ~100 µs
measured here), more than the row itself. A reader sends the same few statements over and over,
so the packets repeat byte for byte. `ReaderConnection` keeps what it made of each packet's bytes
(the parsed field, its `description` entry, its encoding and converter) and reuses that when the
same bytes come again. The same bytes parse the same way and the choice depends only on them and
on the connection's fixed settings (use_unicode, encoding, decoders), so rows and descriptions are
exactly PyMySQL's; bytes not seen before (another statement, a changed schema) are parsed as
PyMySQL parses them.

After the first packet (read by PyMySQL, which also sets the socket's read timeout), a buffered
result's packets and rows are read by chalicelib.db.packets (sliced out of the connection's read
buffer, rows with short values parsed in one loop). The column packets and their EOF, headers
included, also repeat as one block for a statement: a block received before is matched with one
comparison and its descriptions reused (`sluice_blocks`).

Their DATETIME and TIMESTAMP values are read by `datetime_from_text`: PyMySQL's answer, without
its regular expression for the text MySQL sends for a DATETIME(6) (~2 µs a value, two per todo).

This reaches into PyMySQL's result reading (`Connection._read_query_result`,
`MySQLResult._get_descriptions`), as `local_files` does for its local-file sender: when this
PyMySQL does not have what it needs, `reader_connection_class()` answers None and readers use
`pymysql.connect` as before. tests/integration/test_column_cache.py holds the two to the same
results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymysql.converters import convert_datetime

from chalicelib.db.packets import BufferedPackets, packet_payload, read_rows

MAX_COLUMNS = 512  # distinct column packets kept per connection (a reader's statements use ~40)
MAX_BLOCKS = 16  # column blocks kept per connection and column count

_lock = threading.Lock()
_made: list[Any] = []  # [the class or None], made once per process


def datetime_from_text(text: Any) -> Any:
    """`pymysql.converters.convert_datetime(text)`, by `datetime.fromisoformat` when the text has
    the shape MySQL gives a DATETIME(6) or TIMESTAMP(6), '2026-01-02 03:04:05.123456' (a naive
    datetime, or the same fallback for an impossible date); any other text goes to PyMySQL's."""
    if (
        type(text) is str
        and len(text) == 26
        and text[4] == "-"
        and text[7] == "-"
        and text[10] == " "
        and text[13] == ":"
        and text[16] == ":"
        and text[19] == "."
    ):
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if value.tzinfo is None:
                return value
    return convert_datetime(text)


def reader_connection_class() -> Any:
    """`ReaderConnection` (a `pymysql.connections.Connection`), or None when this PyMySQL lacks
    the internals it relies on."""
    with _lock:
        if not _made:
            _made.append(_make())
        return _made[0]


def _make() -> Any:
    """`ReaderConnection` built on this PyMySQL's classes, or None when it lacks what they need."""
    try:
        from pymysql import connections, converters
        from pymysql.constants import FIELD_TYPE
    except ImportError:
        return None
    found = _internals(connections)
    if found is None:
        return None
    connection, mysql_result, field_packet, text_types = found
    describe = _describer(field_packet, text_types, FIELD_TYPE, converters.through)
    internals: Any = connections  # MysqlPacket: not in the type stubs
    result_class = _caching_result_class(mysql_result, describe, internals.MysqlPacket)
    return _reader_connection_class(connection, result_class, _conversions(converters, FIELD_TYPE))


def _internals(connections: Any) -> tuple[Any, Any, Any, Any] | None:
    """PyMySQL's private parts this module builds on (`Connection`, `MySQLResult`,
    `FieldDescriptorPacket`, `TEXT_TYPES`), or None when one is missing or not as expected."""
    internals: Any = connections  # private parts the type stubs do not declare
    Connection: Any = internals.Connection
    MySQLResult: Any = internals.MySQLResult
    FieldDescriptorPacket = getattr(internals, "FieldDescriptorPacket", None)
    MysqlPacket = getattr(internals, "MysqlPacket", None)
    TEXT_TYPES = getattr(internals, "TEXT_TYPES", None)
    if FieldDescriptorPacket is None or MysqlPacket is None or not isinstance(TEXT_TYPES, (set, frozenset)):
        return None
    needed = (
        (Connection, "_read_query_result"),
        (Connection, "_read_packet"),
        (MySQLResult, "_get_descriptions"),
        (MySQLResult, "read"),
        (FieldDescriptorPacket, "description"),
        (MysqlPacket, "get_all_data"),
        (MysqlPacket, "raise_for_error"),
        (Connection, "_read_bytes"),
        (Connection, "_force_close"),
        (MySQLResult, "_read_row_from_packet"),
        (MySQLResult, "_check_packet_is_eof"),
        (MySQLResult, "_read_result_packet"),
    )
    if not all(callable(getattr(owner, name, None)) for owner, name in needed):
        return None
    return Connection, MySQLResult, FieldDescriptorPacket, TEXT_TYPES


def _conversions(converters: Any, FIELD_TYPE: Any) -> dict[Any, Any]:
    """PyMySQL's default conversions, DATETIME and TIMESTAMP read by `datetime_from_text`."""
    conversions = dict(converters.conversions)
    for kind in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
        if conversions.get(kind) is convert_datetime:
            conversions[kind] = datetime_from_text
    return conversions


def _describer(
    FieldDescriptorPacket: Any, TEXT_TYPES: Any, FIELD_TYPE: Any, through: Any
) -> Callable[[Any, bytes], tuple[Any, Any, tuple[str | None, Any]]]:
    """`describe(conn, data)`: what PyMySQL's `_get_descriptions` makes of one column packet."""

    def describe(conn: Any, data: bytes) -> tuple[Any, Any, tuple[str | None, Any]]:
        """What PyMySQL's `_get_descriptions` makes of one column packet (PyMySQL 1.x)."""
        field = FieldDescriptorPacket(data, conn.encoding)
        field_type = field.type_code
        encoding: str | None
        if not conn.use_unicode:
            encoding = None
        elif field_type == FIELD_TYPE.JSON:
            encoding = conn.encoding
        elif field_type in TEXT_TYPES:
            encoding = None if field.charsetnr == 63 else conn.encoding  # 63: binary
        else:
            encoding = "ascii"
        converter = conn.decoders.get(field_type)
        if converter is through:
            converter = None
        return field, field.description(), (encoding, converter)

    return describe


def _caching_result_class(MySQLResult: Any, describe: Callable[[Any, bytes], Any], MysqlPacket: Any) -> Any:
    """A `MySQLResult` whose column descriptions come from the connection's `sluice_blocks` and
    `sluice_columns`, and whose packets after the first are read by chalicelib.db.packets."""

    class ColumnCachingResult(MySQLResult):
        def _read_result_packet(self, first_packet: Any) -> None:
            self.field_count = first_packet.read_length_encoded_integer()
            packets = BufferedPackets(self.connection, MysqlPacket)
            try:
                if not known_columns(self, packets):
                    buf, start, seq = packets.buf, packets.pos, self.connection._next_seq_id
                    self._get_descriptions(packets.next)
                    remember_columns(self, packets, buf, start, seq)
                read_rows(self, packets.next, MysqlPacket)
            finally:
                packets.sync()

        def _get_descriptions(self, next_payload: Callable[[], bytes] | None = None) -> None:
            conn = self.connection
            if next_payload is None:  # an unbuffered result's (SSCursor): packet by packet
                next_payload = lambda: packet_payload(conn, MysqlPacket)  # noqa: E731
            read_descriptions(self, next_payload, describe)

        def _read_rowdata_packet(self) -> None:
            conn = self.connection
            read_rows(self, lambda: packet_payload(conn, MysqlPacket), MysqlPacket)

    return ColumnCachingResult


def known_columns(result: Any, packets: BufferedPackets) -> bool:
    """Whether the result's column packets and their EOF repeat, byte for byte (headers
    included), a block its connection read before (the same statement's): then they are read
    past and the result takes the descriptions made of them then."""
    conn = result.connection
    packets.ready()
    seq = conn._next_seq_id
    for block, first, after, fields, converters, description in conn.sluice_blocks.get(result.field_count, ()):
        if first == seq and packets.take(block, seq, after):
            result.fields, result.converters, result.description = list(fields), list(converters), description
            return True
    return False


def remember_columns(result: Any, packets: BufferedPackets, buf: bytes, start: int, seq: int) -> None:
    """Keep the column block just read (from `start` in `buf`, from sequence number `seq`) with
    its descriptions, when it was all in that buffer."""
    if packets.buf is not buf or start >= packets.pos:
        return
    conn = result.connection
    blocks = conn.sluice_blocks.setdefault(result.field_count, [])
    if len(blocks) >= MAX_BLOCKS:
        blocks.clear()
    made = (list(result.fields), list(result.converters), result.description)
    blocks.append((buf[start : packets.pos], seq, conn._next_seq_id, *made))


def read_descriptions(result: Any, next_payload: Callable[[], bytes], describe: Callable[[Any, bytes], Any]) -> None:
    """`MySQLResult._get_descriptions`, each column packet's bytes described once per connection."""
    conn = result.connection
    known = conn.sluice_columns
    fields = []
    description = []
    decoders = []
    for _ in range(result.field_count):
        data = next_payload()
        column = known.get(data)
        if column is None:
            column = describe(conn, data)
            if len(known) >= MAX_COLUMNS:
                known.clear()
            known[data] = column
        fields.append(column[0])
        description.append(column[1])
        decoders.append(column[2])
    eof = next_payload()
    assert eof[:1] == b"\xfe" and len(eof) < 9, "Protocol error, expecting EOF"
    result.fields = fields
    result.converters = decoders
    result.description = tuple(description)


def _reader_connection_class(Connection: Any, ColumnCachingResult: Any, conversions: dict[Any, Any]) -> Any:
    class ReaderConnection(Connection):
        """A PyMySQL connection whose buffered results reuse known column descriptions and read
        DATETIME and TIMESTAMP values with `datetime_from_text` (unless given its own `conv`)."""

        sluice_conversions = conversions

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.sluice_columns: dict[bytes, tuple[Any, Any, tuple[str | None, Any]]] = {}
            # column count -> (the column packets and their EOF as received, the sequence numbers
            # of the first and after the last, fields, converters, description)
            self.sluice_blocks: dict[int, list[tuple[bytes, int, int, list[Any], list[Any], Any]]] = {}
            if kwargs.get("conv") is None:
                kwargs["conv"] = self.sluice_conversions
            super().__init__(*args, **kwargs)

        def _read_query_result(self, unbuffered: bool = False) -> Any:
            if unbuffered:
                return super()._read_query_result(unbuffered)
            # Connection._read_query_result with the result class above
            self._result = None
            result = ColumnCachingResult(self)
            result.read()
            self._result = result
            if result.server_status is not None:
                self.server_status = result.server_status
            return result.affected_rows

    return ReaderConnection
