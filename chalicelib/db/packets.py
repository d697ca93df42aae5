"""A buffered result's packets as PyMySQL reads them, with less Python per packet, for the reader
connections of chalicelib.db.columns.

- `BufferedPackets`: the payloads of a result's packets, sliced out of the connection's read
  buffer (one `peek` gives every byte already received; the bytes used are consumed after), each
  as PyMySQL's `Connection._read_packet` gives it; a packet not wholly received is read by
- `packet_payload`: `Connection._read_packet` without building a `MysqlPacket` (sequence numbers
  checked, a packet of 16 MiB or more joined with the next, an error packet raised as PyMySQL
  raises it);
- `read_rows`: `MySQLResult._read_rowdata_packet` through one of those, each row by
- `row_values`: a row's values as `MySQLResult._read_row_from_packet` reads them, for rows whose
  values are all shorter than 251 bytes (PyMySQL parses the others).

PyMySQL is imported only to raise its errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def packet_payload(conn: Any, packet_class: Any) -> bytes:
    """The payload of the next packet, as `Connection._read_packet` reads it (bytes through
    `Connection._read_bytes`, sequence numbers checked, a packet of 16 MiB or more joined with
    the next); an error packet raised as PyMySQL raises it."""
    read = conn._read_bytes
    parts: list[bytes] = []
    while True:
        header = read(4)
        length = header[0] | header[1] << 8 | header[2] << 16
        if header[3] != conn._next_seq_id:
            _wrong_sequence(conn, header[3])
        conn._next_seq_id = (header[3] + 1) % 256
        data = read(length)
        if length < 0xFFFFFF:
            break
        parts.append(data)
    if parts:
        parts.append(data)
        data = b"".join(parts)
    if data[:1] == b"\xff":
        packet_class(data, conn.encoding).raise_for_error()
    return data


def _wrong_sequence(conn: Any, got: int) -> None:
    from pymysql import err
    from pymysql.constants import CR

    conn._force_close()
    if got == 0:  # MariaDB sends an error packet numbered 0 when it shuts down
        raise err.OperationalError(CR.CR_SERVER_LOST, "Lost connection to MySQL server during query")
    raise err.InternalError(f"Packet sequence number wrong - got {got} expected {conn._next_seq_id}")


class BufferedPackets:
    """The payloads of a result's next packets, sliced from the connection's read buffer (one
    `peek` gives every byte already received), each as `packet_payload` would read it. The bytes
    sliced are consumed from the buffer by `sync`, which runs before a packet not wholly in the
    buffer is read by `packet_payload`, before an error is raised, and when the result is read."""

    __slots__ = ("buf", "conn", "packet_class", "pos")

    def __init__(self, conn: Any, packet_class: Any) -> None:
        self.conn = conn
        self.packet_class = packet_class
        self.buf = b""
        self.pos = 0

    def next(self) -> bytes:
        conn, buf, pos = self.conn, self.buf, self.pos
        if len(buf) - pos < 4:
            self.sync()
            buf = self.buf = self._peek()  # a packet is due: waiting for it is right
            pos = 0
        if len(buf) - pos >= 4:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + length
            if end <= len(buf) and length < 0xFFFFFF:
                seq = buf[pos + 3]
                if seq != conn._next_seq_id:
                    self.sync()
                    _wrong_sequence(conn, seq)
                conn._next_seq_id = (seq + 1) % 256
                self.pos = end
                data = buf[pos + 4 : end]
                if data[:1] == b"\xff":
                    self.sync()
                    self.packet_class(data, conn.encoding).raise_for_error()
                return data
        self.sync()  # not wholly received (or 16 MiB and more): PyMySQL's way
        return packet_payload(conn, self.packet_class)

    def ready(self) -> None:
        """At least the start of the next packet in `buf` (waiting for it: a packet is due)."""
        if len(self.buf) - self.pos < 4:
            self.sync()
            self.buf = self._peek()

    def take(self, block: bytes, seq: int, after: int) -> bool:
        """Whether the next packets are `block`, byte for byte, starting at sequence number
        `seq`: then they are read past, the next sequence number being `after`."""
        conn = self.conn
        if conn._next_seq_id == seq and self.buf.startswith(block, self.pos):
            self.pos += len(block)
            conn._next_seq_id = after
            return True
        return False

    def _peek(self) -> bytes:
        try:
            return bytes(self.conn._rfile.peek(1))
        except OSError as exc:  # as Connection._read_bytes reports a failed read
            from pymysql import err
            from pymysql.constants import CR

            self.conn._force_close()
            raise err.OperationalError(
                CR.CR_SERVER_LOST, f"Lost connection to MySQL server during query ({exc})"
            ) from exc

    def sync(self) -> None:
        """Consume the bytes sliced so far from the connection's read buffer."""
        if self.pos:
            used, self.pos, self.buf = self.pos, 0, b""
            rfile = self.conn._rfile
            if rfile is not None:
                rfile.read(used)


def row_values(data: bytes, converters: Any) -> tuple[Any, ...] | None:
    """A row packet's values as `MySQLResult._read_row_from_packet` reads them, or None when a
    value is 251 bytes or longer or the packet is cut short (PyMySQL parses those rows)."""
    values: list[Any] = []
    pos, end = 0, len(data)
    for encoding, converter in converters:
        if pos >= end:
            break  # as PyMySQL: a row packet with fewer values ends the row
        size = data[pos]
        if size < 251:
            value: Any = data[pos + 1 : pos + 1 + size]
            pos += 1 + size
            if encoding is not None:
                value = value.decode(encoding)
            if converter is not None:
                value = converter(value)
        elif size == 251:  # NULL
            pos += 1
            value = None
        else:
            return None
        values.append(value)
    return tuple(values) if pos <= end else None


def read_rows(result: Any, next_payload: Callable[[], bytes], packet_class: Any) -> None:
    """`MySQLResult._read_rowdata_packet` with the packets `next_payload` gives: rows up to the
    EOF packet (its warnings and more-results flag read by PyMySQL), each by `row_values` or,
    when that declines, by PyMySQL's `_read_row_from_packet`."""
    encoding = result.connection.encoding
    converters = result.converters
    rows = []
    while True:
        data = next_payload()
        if data[:1] == b"\xfe" and len(data) < 9:
            result._check_packet_is_eof(packet_class(data, encoding))
            result.connection = None
            break
        row = row_values(data, converters)
        rows.append(row if row is not None else result._read_row_from_packet(packet_class(data, encoding)))
    result.affected_rows = len(rows)
    result.rows = tuple(rows)
