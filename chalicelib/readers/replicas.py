"""ReplicaReader: reads from one of the replicas, failing over to the next and then the master."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from chalicelib.db.database import Database, open_database
from chalicelib.errors import DatabaseUnavailable
from chalicelib.readers import Row, TodoReader
from chalicelib.readers.sql import SqlReader

log = logging.getLogger(__name__)


class ReplicaReader(TodoReader):
    """Readers in preference order: a replica chosen once per process, the other replicas, then
    the master. A reader that fails is skipped for this call; the first one that answers wins."""

    def __init__(self, readers: Sequence[TodoReader], choose: Callable[[int], int] | None = None) -> None:
        if not readers:
            raise ValueError("ReplicaReader needs at least one reader")
        readers = list(readers)
        replicas, master = readers[:-1], readers[-1:]
        if len(replicas) > 1:
            start = (choose or (lambda n: random.randrange(n)))(len(replicas))
            replicas = replicas[start:] + replicas[:start]
        self.readers = replicas + master

    @classmethod
    def from_urls(cls, urls: Sequence[str], master: Database, **kwargs: Any) -> ReplicaReader:
        databases = [open_database(u, **kwargs) for u in urls if u != master.url]
        return cls([SqlReader(d) for d in databases] + [SqlReader(master)])

    def _first(self, call: Callable[[TodoReader], Any]) -> Any:
        last: DatabaseUnavailable | None = None
        for reader in self.readers:
            try:
                return call(reader)
            except DatabaseUnavailable as exc:
                log.warning("reader unavailable, trying the next: %s", exc)
                last = exc
        assert last is not None
        raise DatabaseUnavailable(f"no replica and no master answered: {last}") from last

    def get_todo(self, owner: str, todo_id: str) -> Row | None:
        return self._first(lambda r: r.get_todo(owner, todo_id))

    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None) -> list[Row]:
        return self._first(lambda r: r.list_todos(owner, after, limit, state))

    def get_profile(self, owner: str) -> Row | None:
        return self._first(lambda r: r.get_profile(owner))
