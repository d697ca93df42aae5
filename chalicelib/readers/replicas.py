"""ReplicaReader: reads from one of the replicas, failing over to the next and then the master."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from chalicelib.db.database import open_reader
from chalicelib.errors import DatabaseUnavailable
from chalicelib.readers import Filters, Reader, Row, Seen, SeenLater, SeenRows
from chalicelib.readers.breaker import Breaker
from chalicelib.readers.sql import SqlReader

log = logging.getLogger(__name__)


class ReplicaReader(Reader):
    """Readers in preference order: a replica chosen once per process (at random, so processes
    spread over the replicas), the other replicas, then the master.

    A reader that cannot be reached (DatabaseUnavailable) is skipped for `cooldown` seconds, so
    requests during an outage go straight to the next reader instead of each paying the dead
    one's connect timeout; after the cool-down it is tried again (and, answering, preferred
    again). When every reader is cooling down, all are tried in order anyway: the service never
    answers 503 without asking.
    """

    def __init__(
        self,
        readers: Sequence[Reader],
        choose: Callable[[int], int] | None = None,
        cooldown: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not readers:
            raise ValueError("ReplicaReader needs at least one reader")
        readers = list(readers)
        replicas, master = readers[:-1], readers[-1:]
        if len(replicas) > 1:
            start = (choose or (lambda n: random.randrange(n)))(len(replicas))
            replicas = replicas[start:] + replicas[:start]
        self.readers = replicas + master
        last = len(self.readers) - 1
        self.breakers = [
            Breaker(cooldown, clock, name="master" if i == last else f"reader {i}", fallback="trying the next")
            for i in range(len(self.readers))
        ]

    @property
    def cooldown(self) -> float:
        """Seconds a reader that failed is skipped (each reader has its own Breaker)."""
        return self.breakers[0].cooldown

    @cooldown.setter
    def cooldown(self, seconds: float) -> None:
        for breaker in self.breakers:
            breaker.cooldown = seconds

    @classmethod
    def from_urls(
        cls, urls: Sequence[str], master_url: str, open_db: Callable[[str], Any] = open_reader, **kwargs: Any
    ) -> ReplicaReader:
        """Replicas from REPLICA_URLS (the master's URL among them is ignored), then the master."""
        replicas = [SqlReader(open_db(u)) for u in dict.fromkeys(urls) if u != master_url]
        return cls([*replicas, SqlReader(open_db(master_url))], **kwargs)

    def _order(self) -> list[int]:
        breakers = self.breakers
        for breaker in breakers:
            if breaker.open_until != 0.0:
                break
        else:  # every breaker closed (the usual case): each allows() without reading the clock
            return list(range(len(breakers)))
        up = [i for i, breaker in enumerate(breakers) if breaker.allows()]
        if len(up) == len(breakers):
            return up
        cooling = sorted((i for i in range(len(breakers)) if i not in up), key=lambda i: breakers[i].open_until)
        return up + cooling

    def _first(self, call: Callable[[Reader], Any]) -> Any:
        return self._first_at(call)[1]

    def _first_at(self, call: Callable[[Reader], Any]) -> tuple[int, Any]:
        """(index of the reader that answered, its answer)."""
        last: DatabaseUnavailable | None = None
        order = self._order()
        for index in order:
            try:
                result = call(self.readers[index])
            except DatabaseUnavailable as exc:
                self.breakers[index].failed(exc, "reading")
                last = exc
                continue
            self.breakers[index].succeeded()
            return index, result
        assert last is not None
        raise DatabaseUnavailable(f"no replica and no master answered: {last}") from last

    def get(self, resource: str, owner: str, id_: str) -> Row | None:
        return self._first(lambda r: r.get(resource, owner, id_))

    def list_rows(self, resource: str, owner: str, after: str | None, limit: int, filters: Filters) -> list[Row]:
        return self._first(lambda r: r.list_rows(resource, owner, after, limit, filters))

    # -- versioned reads: an answer from the master while replicas exist is not "settled" --------
    def _settled(self, index: int) -> bool:
        return len(self.readers) == 1 or index < len(self.readers) - 1

    def seen(self, resource: str, owner: str, id_: str) -> Seen:
        index, seen = self._first_at(lambda r: r.seen(resource, owner, id_))
        return seen if self._settled(index) else seen._replace(settled=False)

    def seen_many(self, resource: str, owner: str, ids: Collection[str]) -> dict[str, Seen]:
        index, found = self._first_at(lambda r: r.seen_many(resource, owner, ids))
        if self._settled(index):
            return dict(found)
        return {i: s._replace(settled=False) for i, s in found.items()}

    def list_seen(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
    ) -> list[Seen]:
        index, rows = self._first_at(lambda r: r.list_seen(resource, owner, after, limit, filters, ids))
        return self._as_settled(index, rows)

    def _as_settled(self, index: int, rows: Sequence[Seen]) -> list[Seen]:
        if self._settled(index):
            return list(rows)
        return [s._replace(settled=False) for s in rows]

    def _batch_settled(self, index: int, rows: Sequence[Seen]) -> Sequence[Seen]:
        """`_as_settled` for a page query's batch: a SeenRows stays one (no Seen built per row)."""
        if type(rows) is not SeenRows:
            return self._as_settled(index, rows)
        return rows if self._settled(index) else rows.unsettled()

    def start_list_seen(
        self, resource: str, owner: str, after: str | None, limit: int, filters: Filters, ids: Collection[str]
    ) -> SeenLater:
        """Sent to the first reader `_order` gives; when it fails (sending or reading), the read
        is `list_seen`'s, which skips it (its breaker is open) and fails over."""
        index = self._order()[0]
        breaker = self.breakers[index]
        args = (resource, owner, after, limit, filters, ids)
        try:
            rows = self.readers[index].start_list_seen(*args)
        except DatabaseUnavailable as exc:
            breaker.failed(exc, "reading")
            return lambda replaced=None: self.list_seen(*args)

        def seen(replaced: Mapping[str, int] | None = None) -> Sequence[Seen]:
            try:
                got = rows(replaced)
            except DatabaseUnavailable as exc:
                breaker.failed(exc, "reading")
                return self.list_seen(*args)
            breaker.succeeded()
            return self._batch_settled(index, got)

        return seen
