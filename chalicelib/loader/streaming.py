"""Reading a delivered object as a stream (CONTRACT sections 4 and 5): GZIP recognised by content
(one or more members), inflated piece by piece and split into lines as the loader asks for them,
with an object that inflates beyond LOADER_MAX_OBJECT_BYTES refused whole (`ObjectTooLarge`) and an
overlong line kept only as a reject."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Generator, Iterator
from typing import BinaryIO

from chalicelib.config import DEFAULT_LOADER_MAX_OBJECT_BYTES
from chalicelib.loader.reject_lines import MAX_REJECT_LINE_BYTES, Reject, problem_reject, reject_line

# Firehose's largest buffer is 128 MiB; the loader refuses objects that inflate beyond twice that
# (LOADER_MAX_OBJECT_BYTES sets it per process).
MAX_OBJECT_BYTES = DEFAULT_LOADER_MAX_OBJECT_BYTES
# One command is at most about 64 KiB (10,000 characters of notes, each at most six bytes escaped);
# a longer line is a reject, and only its start is read into memory.
MAX_LINE_BYTES = 1024 * 1024


class ObjectTooLarge(Exception):
    """The object inflates beyond the loader's limit (LOADER_MAX_OBJECT_BYTES): refused whole."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the object inflates beyond LOADER_MAX_OBJECT_BYTES ({limit} bytes); not applied")
        self.limit = limit


_TOO_LARGE = "inflated size over the limit"
_MAGIC = b"\x1f\x8b"
_PADDING = b"\x00\n\r\t "  # what may follow the last GZIP member
READ_BYTES = 1 << 20  # how much of a stream's compressed bytes is read at a time


def inflate(body: bytes, piece: int = 1 << 20, limit: int = MAX_OBJECT_BYTES) -> tuple[bytes, str | None]:
    """GZIP (one or more members, recognised by content) to bytes; plain bytes unchanged.

    Returns (data, problem): on a corrupt or oversized stream, what inflated cleanly (in pieces of
    at most `piece` bytes; the piece the damage is found in is lost) and why the rest was not used.
    """
    steps = _inflate_steps(body, piece, limit)
    pieces: list[bytes] = []
    while True:
        try:
            pieces.append(next(steps))
        except StopIteration as stop:
            problem: str | None = stop.value
            break
    return (pieces[0] if len(pieces) == 1 else b"".join(pieces)), problem


def _raw_pieces(source: bytes | BinaryIO, size: int) -> Iterator[bytes]:
    """The object's bytes as they are read: slices of `size` of bytes in memory, or reads of a stream."""
    if isinstance(source, bytes):
        if len(source) <= size:
            yield source
            return
        view = memoryview(source)
        for start in range(0, len(source), size):
            yield bytes(view[start : start + size])
        return
    while True:
        chunk = source.read(size)
        if not chunk:
            return
        yield chunk


def _inflate_steps(
    source: bytes | BinaryIO, piece: int = 1 << 20, limit: int = MAX_OBJECT_BYTES
) -> Generator[bytes, None, str | None]:
    """inflate() piece by piece, reading `source` (bytes, or a binary stream read once) only as
    far as needed: yields the bytes as they inflate (at most `piece` at a time), returns the
    problem (or None; _TOO_LARGE once more than `limit` bytes came out)."""
    raw = _raw_pieces(source, READ_BYTES)
    rest = b""
    for chunk in raw:  # enough to tell GZIP by its first two bytes
        rest += chunk
        if len(rest) >= 2:
            break
    size = 0
    if rest[:2] != _MAGIC:  # plain: the bytes as they are, in pieces
        while rest:
            for start in range(0, len(rest), piece):
                out = rest[start : start + piece] if start or len(rest) > piece else rest
                size += len(out)
                if size > limit:
                    return _TOO_LARGE
                yield out
            rest = next(raw, b"")
        return None
    while True:  # one GZIP member per turn; `rest` starts with its magic
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while not inflater.eof:
                out = inflater.decompress(rest, piece)
                rest = inflater.unconsumed_tail
                if out:
                    size += len(out)
                    if size > limit:
                        return _TOO_LARGE
                    yield out
                if not rest and len(out) < piece and not inflater.eof:  # all input taken, none held back
                    rest = next(raw, b"")
                    if not rest:
                        break
        except zlib.error as exc:
            return f"corrupt gzip stream: {exc}"
        if not inflater.eof:
            return "truncated gzip stream"
        rest = inflater.unused_data
        while len(rest) < 2:
            more = next(raw, None)
            if more is None:
                break
            rest += more
        if rest[:2] != _MAGIC:
            if rest.strip(_PADDING) or any(chunk.strip(_PADDING) for chunk in raw):
                return "trailing bytes after the gzip stream"
            return None


class LineStream:
    """A delivered object's lines (as object_lines gives them), inflated and split piece by piece
    as they are asked for, and let go once taken: memory holds one piece and the lines not yet
    taken, whatever the object's size (blank and rejected lines cost nothing once taken).

    `fill(n)` reads until at least n lines wait or the object ends (`done`; then `problem` is
    inflate's problem, and `problem_reject()` its one reject); `take(n)` hands out the next n,
    numbered from `first`. A line longer than `max_line` bytes is not kept: it counts as an empty
    line and its reject waits in `rejects`. Raises ObjectTooLarge once more than `limit` bytes have
    inflated.
    """

    PIECE = 256 * 1024

    def __init__(
        self,
        body: bytes | BinaryIO,
        piece: int = PIECE,
        limit: int = MAX_OBJECT_BYTES,
        max_line: int = MAX_LINE_BYTES,
    ) -> None:
        self._steps = _inflate_steps(body, piece, limit)
        self._limit = limit
        self._max_line = max_line
        self._carry: list[bytes] = []  # the bytes after the last newline so far (one line's start)
        self._carried = 0  # their length (the whole line's, once it is over max_line)
        self._lines: list[str] = []  # lines read; those before _next were taken
        self._next = 0
        self.first = 1  # the number of the next line `take` hands out
        self.rejects: list[Reject] = []
        self.done = False
        self.problem: str | None = None
        self._after_last = 0  # once done: the number of the line after the object's last line
        # The same object's stream again, from its start, where its reader can open it again
        # (BatchLoader sets it): the fast path reads an object twice on a rare path (StartOver).
        self.again: Callable[[], LineStream] | None = None

    @property
    def waiting(self) -> int:
        """Lines read and not yet taken."""
        return len(self._lines) - self._next

    @property
    def count(self) -> int:
        """Lines read so far, taken or not."""
        return self.first - 1 + self.waiting

    def fill(self, count: int) -> int:
        """Read until `count` lines wait or the object ends; how many wait."""
        if self._next and self.waiting < count:  # let the taken lines go before reading on
            del self._lines[: self._next]
            self._next = 0
        lines, carry = self._lines, self._carry
        while len(lines) - self._next < count and not self.done:
            try:
                piece = next(self._steps)
            except StopIteration as stop:
                if stop.value is _TOO_LARGE:
                    raise ObjectTooLarge(self._limit) from None
                self.problem = stop.value
                self.done = True
                ended = not self._carried  # the last line ended with a newline (or there was none)
                self._end_line(b"")
                self._after_last = self.count + (0 if ended else 1)
                break
            cut = piece.rfind(b"\n") + 1
            if not cut:  # no line ends here: keep the pieces, join them once (a long line costs linear time)
                self._carry_on(piece)
                continue
            if carry:
                end = piece.find(b"\n")
                self._end_line(piece[:end])
                data = piece[end + 1 : cut]
            else:
                data = piece[:cut]
            if cut < len(piece):
                self._carry_on(piece[cut:])
            if data:
                _split_into(lines, data)
        return len(lines) - self._next

    def take(self, count: int) -> tuple[int, list[str]]:
        """(number of the first, lines): up to `count` waiting lines, handed out and let go here."""
        start = self._next
        if start == 0 and count >= len(self._lines):
            batch, self._lines = self._lines, []
        else:
            batch = self._lines[start : start + count]
            self._next = start + len(batch)
        first = self.first
        self.first += len(batch)
        return first, batch

    def problem_reject(self) -> Reject | None:
        """Once done: the one reject of the inflate problem, if any, numbered after the object's last
        line. The empty "line" after a final newline is not one of its lines: an object whose
        three lines end in a newline, then trailing bytes, has its problem at line 4."""
        return problem_reject(self._after_last, self.problem) if self.problem else None

    def take_rejects(self) -> list[Reject]:
        rejects, self.rejects = self.rejects, []
        return rejects

    def _carry_on(self, part: bytes) -> None:
        before = self._carried
        self._carried += len(part)
        if self._carried <= self._max_line:
            self._carry.append(part)
        elif before <= self._max_line:  # the line just became too long: only its start is kept
            self._carry[:] = [b"".join([*self._carry, part])[:MAX_REJECT_LINE_BYTES]]

    def _end_line(self, tail: bytes) -> None:
        """The carried line ends with `tail`: append it (or, when too long, its reject)."""
        if self._carried + len(tail) > self._max_line:
            start = b"".join([*self._carry, tail[:MAX_REJECT_LINE_BYTES]])[:MAX_REJECT_LINE_BYTES]
            number = self.first + len(self._lines) - self._next
            self.rejects.append(reject_line(number, f"line longer than {self._max_line} bytes", _decoded(start)))
            self._lines.append("")
        else:
            self._lines.append(_decoded(b"".join([*self._carry, tail]) if self._carry else tail))
        self._carry.clear()
        self._carried = 0

    def read_all(self) -> list[str]:
        """Every line of the object (tests and tools: the whole object in memory)."""
        while not self.done:
            self.fill(self.waiting + 1)
        return self.take(self.waiting)[1]


def _decoded(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def _split_into(lines: list[str], data: bytes) -> None:
    """Append the lines of `data` (which ends in a newline), decoded as object_lines does."""
    view = data[:-1]
    try:
        lines.extend(view.decode("utf-8").split("\n"))
    except UnicodeDecodeError:
        lines.extend(raw.decode("utf-8", "surrogateescape") for raw in view.split(b"\n"))


def object_lines(body: bytes) -> tuple[list[str], str | None]:
    """A delivered object's text split into lines (inflated first), and any inflate problem.
    A line that is not UTF-8 is decoded with surrogateescape (and rejected as not UTF-8)."""
    stream = LineStream(body)
    return stream.read_all(), stream.problem
