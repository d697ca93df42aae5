"""Poison lines never block an object: shared by the SQLite (functional) and MariaDB (integration)
tiers.

PROPERTY: an object made of valid commands and arbitrary bytes as lines (the first line a command,
so a plain object is not taken for GZIP; or the whole object GZIP-compressed) always loads: the
valid commands apply exactly as the last-writer-wins model says, every other non-blank line is
quarantined in `ingest_rejects` under its own line number (with a reason and text that read back
as UTF-8), and blank lines (empty, or JSON whitespace only: space, tab, CR) are skipped.

Lines known to have blocked objects are drawn often: an unknown key that is a lone surrogate
(JSON-escaped, at the top level or inside `data`), raw invalid UTF-8 in a key, lines made only of
other Unicode whitespace.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

from hypothesis import strategies as st

from chalicelib.commands import WriteCommand
from chalicelib.db.database import Database
from chalicelib.loader import BatchLoader, batch_id, local_etag
from tests.loader_properties import check_against_model, histories, snapshot

GOOD = (
    b'{"v":1,"op":"put","resource":"todos","owner":"alice","id":"0190b2a0-0000-7000-8000-000000000001",'
    b'"version":1767225600000000,"op_id":"00000000-0000-4000-8000-000000000000","at":"2026-01-01T00:00:00.000000Z",'
)
POISON_LINES = (
    b'{"\\udc80":1}',
    b'{"\\ud800":1, "v": 1}',
    GOOD + b'"data":{"title":"x","\\udc80":1}}',
    GOOD + b'"data":{"title":"x"},"\\udfff":2}',
    b'{"\x80":1}',
    b'{"\xed\xa0\x80": 1}',
    GOOD + b'"data":{"title":"x","\xff\xfe":1}}',
    b"\x1c\x1d\x1e\x1f",
    "\u2028".encode(),
    "\u3000\u3000".encode(),
    "\u00a0\u0085".encode(),
    b"\x0b\x0c",
    b" \t\r",
    b"",
    b'"\\udc80"',
    b'{"v":1}{"\\udc80":1}',
    b'[{"\\udc80": "\\ud800"}]',
)

JUNK = st.one_of(
    st.sampled_from(POISON_LINES),
    st.binary(max_size=60).map(lambda raw: raw.replace(b"\n", b"")),
    st.text(max_size=20).map(lambda text: text.encode("utf-8", "surrogatepass").replace(b"\n", b"")),
)


@dataclass
class PoisonedObject:
    history: list[WriteCommand]
    lines: list[bytes]  # every line, without its newline
    junk: set[int]  # line numbers (from 1) of non-blank lines that are not commands
    gzipped: bool

    def body(self) -> bytes:
        raw = b"".join(line + b"\n" for line in self.lines)
        return gzip.compress(raw, mtime=0) if self.gzipped else raw


@st.composite
def poisoned_objects(draw: st.DrawFn) -> PoisonedObject:
    history = draw(histories(max_commands=8))
    items: list[bytes | WriteCommand] = list(history)
    for junk in draw(st.lists(JUNK, min_size=1, max_size=10)):
        items.insert(draw(st.integers(1, len(items))), junk)  # after the first command
    lines: list[bytes] = []
    junk_numbers: set[int] = set()
    for number, item in enumerate(items, start=1):
        if isinstance(item, bytes):
            lines.append(item)
            if item.strip(b" \t\r"):
                junk_numbers.add(number)
        else:
            lines.append(item.to_line()[:-1])
    return PoisonedObject(history, lines, junk_numbers, draw(st.booleans()))


def assert_poison_never_blocks(db: Database, loader: BatchLoader, case: PoisonedObject) -> None:
    body = case.body()
    key = "writes/2026/01/01/00/poisoned"
    result = loader.load("bucket", key, local_etag(body), body)  # never raises
    check_against_model(snapshot(db), case.history)
    rows = db.query(
        "SELECT line_no, reason, line FROM ingest_rejects WHERE batch_id = %s", (batch_id(key, local_etag(body)),)
    )
    assert {int(r[0]) for r in rows} == case.junk, "every non-blank junk line, and nothing else, is quarantined"
    assert result.rejected == len(rows)
    for _, reason, text in rows:
        assert reason and isinstance(reason, str) and isinstance(text, str)
        reason.encode("utf-8")
        text.encode("utf-8")
    assert result.applied + result.stale == len(case.history)
