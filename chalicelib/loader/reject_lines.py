"""Rejected lines as `ingest_rejects` keeps them (CONTRACT section 5): the line number, a reason,
and the line's text made storable whatever bytes it held, clipped."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.validation import is_utf8

MAX_REJECT_LINE_CHARS = 2000
MAX_REJECT_LINE_BYTES = 4 * MAX_REJECT_LINE_CHARS


@dataclass(frozen=True, slots=True)
class Reject:
    line_no: int
    reason: str
    line: str


def reject_line(number: int, reason: str, line: str) -> Reject:
    """The reject of line `number`: its reason and text always storable (valid UTF-8: see `storable`), clipped.
    Both may hold what the line held: the reason names a line's unknown keys, for one. Both show a
    byte that was not UTF-8 as `\\xNN`; a lone surrogate the line wrote as a JSON escape
    (`"\\udc80"`) is that escape's text in the line, and the reason shows it the same way."""
    text = storable(line)
    if len(text) > MAX_REJECT_LINE_CHARS:
        text = text[:MAX_REJECT_LINE_CHARS] + "..."
    return Reject(number, _storable_reason(reason, line)[:500], text)


def _storable_reason(reason: str, line: str) -> str:
    """`storable(reason)`, except for a lone surrogate the line does not hold as a character: the
    reason got it from a JSON escape (json.loads), not from a byte that was not UTF-8 (which the
    line holds as surrogateescape decoded it), so it is written as the escape, `\\udNNN`."""
    if reason.isascii() or is_utf8(reason):
        return reason
    return storable(
        "".join(_escaped(ch) if _SURROGATE <= ch <= _SURROGATE_END and ch not in line else ch for ch in reason)
    )


_SURROGATE, _SURROGATE_END = "\ud800", "\udfff"


def _escaped(ch: str) -> str:
    return f"\\u{ord(ch):04x}"


def storable(text: str) -> str:
    """`text` as valid UTF-8, for MySQL's utf8mb4 and SQLite: unchanged when it already is;
    otherwise each lone surrogate U+DC80..U+DCFF (how surrogateescape decodes a byte that was not
    UTF-8) becomes that byte, written `\\xNN` where not UTF-8, and any other lone surrogate
    `\\udNNN`."""
    if text.isascii() or is_utf8(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the object's own bytes back
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def problem_reject(number: int, problem: str) -> Reject:
    """The reject recorded after the last line (`number`) when the object did not inflate cleanly."""
    return reject_line(number, problem, "")


def line_no_of(reject: Reject) -> int:
    """The sort key of rejects: their line's number."""
    return reject.line_no
