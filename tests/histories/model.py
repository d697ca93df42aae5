"""The model a history is held to, written from the contract alone (shared/CONTRACT.md sections 3
and 5), never from chalicelib's helpers: last-writer-wins is computed here from the commands the
stream took, and what a caller must see from the 202s it was given.

What it knows
    - every accepted command (`Cmd`): its key, (version, op_id), the fields it must store, the API
      instance that took it, whether its pending entry was recorded (Redis took it) and in which
      Redis "epoch" of its owner (a flush starts a new one), and the load that first committed it;
    - which loads the replica shows (`replica_seq`: loads up to it are readable there).

What it derives for a read (`View`: the instance's clock, whether pending writes are readable for
this request, which database answers it)
    - `floor`: the caller's pending entry of the key that Redis still keeps (recorded in the
      current epoch, not older than PENDING_TTL by the reading instance's clock): no read may show
      a state older, in (version, op_id) order;
    - `determinate`: the key's last-writer-wins winner, when every read must show it: it is loaded
      and readable in the database that answers, or it is the kept pending entry;
    - `visible`: a command loaded and readable in the database that answers.

Each `check_*` returns the problems of one answer as (check, message) pairs; the runner adds the
seed and the step.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Key = tuple[str, str, str]  # (resource, owner, id)
Problem = tuple[str, str]  # (check, message)

# the contract's todo, command schema version 2 (priority and list_id since v2)
TODO_FIELDS = ("title", "notes", "state", "tags", "due_at", "priority", "list_id")
PROFILE_FIELDS = ("display_name", "locale", "timezone")
TODO_READ_KEYS = frozenset(("id", *TODO_FIELDS, "version", "created_at", "updated_at"))
PROFILE_READ_KEYS = frozenset((*PROFILE_FIELDS, "version", "created_at", "updated_at"))
# A pending entry older than this share of PENDING_TTL in real time may be gone from Redis (the
# hash's own expiry runs on Redis's clock, not the injected one): the model no longer counts on it.
REAL_TTL_MARGIN = 0.8


def instant_us(text: str) -> int:
    """A timestamp as reads show it (RFC 3339 UTC, `Z`, with or without a fraction), in
    microseconds since the epoch: the unit of versions, so that `at` == version."""
    if not isinstance(text, str) or len(text) < 20 or not text.endswith("Z"):
        raise ValueError(f"not an RFC 3339 UTC timestamp: {text!r}")
    moment = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    fraction = text[20:-1] if text[19] == "." else ""
    if text[19] not in ".Z" or (fraction and not fraction.isdigit()):
        raise ValueError(f"not an RFC 3339 UTC timestamp: {text!r}")
    return int(moment.timestamp()) * 1_000_000 + int((fraction + "000000")[:6])


def us_text(us: int) -> str:
    seconds, micros = divmod(us, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


@dataclass(eq=False)
class Cmd:
    """One accepted command."""

    seq: int  # acceptance order in the history
    owner: str
    resource: str  # "todos" or "profiles"
    id: str
    op: str  # "put" or "delete"
    version: int
    op_id: str
    data: dict[str, Any] | None  # the fields as they must be stored and read (None: a delete)
    instance: int
    step: int
    recorded: bool = False  # its pending entry was written (the request met no Redis failure)
    epoch: int = 0  # its owner's Redis epoch when recorded
    recorded_real: float = 0.0  # time.monotonic() when recorded
    loaded: int | None = None  # the load (sequence number) that first committed it

    @property
    def key(self) -> Key:
        return (self.resource, self.owner, self.id)

    @property
    def order(self) -> tuple[int, str]:
        return (self.version, self.op_id)

    @property
    def live(self) -> bool:
        return self.op == "put"

    def label(self) -> str:
        what = self.data.get("title") or self.data.get("display_name") if self.data else None
        shown = f" {what!r}" if what else ""
        return f"{self.op}{shown} v{self.version} op_id {self.op_id} (step {self.step}, instance {self.instance})"


@dataclass(frozen=True)
class View:
    """The circumstances of one read: the instance's clock, whether the caller's pending writes
    can be read (Redis up and not skipped by the instance's breaker, and no Redis failure during
    the request), and which database answers ("replica" or "master")."""

    now_us: int
    pending: bool
    db: str
    real_now: float = field(default_factory=time.monotonic)


class Model:
    def __init__(self, pending_ttl_seconds: float) -> None:
        self.ttl_us = int(pending_ttl_seconds * 1_000_000)
        self.ttl_real = pending_ttl_seconds * REAL_TTL_MARGIN
        self.cmds: list[Cmd] = []
        self.by_key: dict[Key, list[Cmd]] = defaultdict(list)
        self.epoch: dict[str, int] = defaultdict(int)
        self.load_seq = 0  # loads committed so far (each object's first commit)
        self.replica_seq = 0  # loads the replica shows (the SQLite tier reads the master: all)
        # per owner, bumped by anything that may change what a read shows (writes, loads, faults)
        self.generation: dict[str, int] = defaultdict(int)
        # per key: (generation, command seq, created_at, route) of the last read that showed it
        self.created_seen: dict[Key, tuple[int, int, str, str]] = {}

    # -- what happened -------------------------------------------------------------------------
    def accept(self, cmd: Cmd) -> None:
        self.cmds.append(cmd)
        self.by_key[cmd.key].append(cmd)
        self.generation[cmd.owner] += 1

    def flushed(self, owners: Iterable[str]) -> None:
        """Redis lost every entry of these owners (FLUSHDB, a restart)."""
        for owner in owners:
            self.epoch[owner] += 1
            self.generation[owner] += 1

    def changed(self, owners: Iterable[str]) -> None:
        """Something outside the model's terms changed what reads may show (time, caches)."""
        for owner in owners:
            self.generation[owner] += 1

    def committed(self, cmds: Iterable[Cmd]) -> int:
        """An object holding `cmds` was loaded (its transaction committed); returns the load's number."""
        self.load_seq += 1
        for cmd in cmds:
            if cmd.loaded is None:
                cmd.loaded = self.load_seq
            self.generation[cmd.owner] += 1
        return self.load_seq

    def replica_caught_up(self) -> None:
        if self.replica_seq != self.load_seq:
            self.replica_seq = self.load_seq
            for owner in list(self.generation):
                self.generation[owner] += 1

    # -- what follows ----------------------------------------------------------------------------
    def winner(self, key: Key) -> Cmd | None:
        """The greatest (version, op_id) of the key's accepted commands: what loading ends with."""
        best = None
        for cmd in self.by_key.get(key, ()):
            if best is None or cmd.order > best.order:
                best = cmd
        return best

    def visible(self, cmd: Cmd, view: View) -> bool:
        """Loaded, and readable in the database that answers the read."""
        if cmd.loaded is None:
            return False
        return view.db == "master" or cmd.loaded <= self.replica_seq

    def entry(self, key: Key, view: View) -> Cmd | None:
        """The key's pending entry Redis keeps for its owner now (the newest recorded command of
        the current epoch, unless older than PENDING_TTL by the reading instance's clock)."""
        epoch = self.epoch[key[1]]
        top = None
        for cmd in self.by_key.get(key, ()):
            if cmd.recorded and cmd.epoch == epoch and (top is None or cmd.order > top.order):
                top = cmd
        if top is None or top.version + self.ttl_us < view.now_us:
            return None
        if view.real_now - top.recorded_real > self.ttl_real:
            return None
        return top

    def floor(self, key: Key, view: View) -> Cmd | None:
        """The state no read by the key's owner may go below, if the read can see pending writes."""
        return self.entry(key, view) if view.pending else None

    def determinate(self, key: Key, view: View) -> Cmd | None:
        """The winner, when a read that merges pending writes into database rows must show it."""
        winner = self.winner(key)
        if winner is None:
            return None
        if self.visible(winner, view) or self.floor(key, view) is winner:
            return winner
        return None

    def owner_keys(self, owner: str, resource: str = "todos") -> list[Key]:
        return sorted(k for k in self.by_key if k[0] == resource and k[1] == owner)

    # -- identifying what a read shows -------------------------------------------------------------
    def identify(self, key: Key, row: Any) -> Cmd | None:
        """The put whose state `row` shows (versions tie across instances: the written fields,
        unique per command, tell which)."""
        if not isinstance(row, dict):
            return None
        name = "title" if key[0] == "todos" else "display_name"
        for cmd in self.by_key.get(key, ()):
            if cmd.live and cmd.version == row.get("version") and cmd.data and cmd.data[name] == row.get(name):
                return cmd
        return None

    # -- checks ----------------------------------------------------------------------------------
    def check_row(
        self, key: Key, row: Any, view: View, route: str, cache_may_be_stale: bool = False
    ) -> tuple[Cmd | None, list[Problem]]:
        """A row a read showed: the command it shows, and what is wrong with it (its shape and
        fields, its created_at and updated_at, and the caller's session floor). A read by key
        whose cache entry may be stale by the cache's own terms (a load whose invalidation met a
        dead Redis, a fill from a lagging replica) is not held to the loaded created_at."""
        cmd = self.identify(key, row)
        if cmd is None:
            return None, [("phantom", f"{route} showed {_short(row)}, which no accepted write of {key} made")]
        problems: list[Problem] = []
        want = TODO_READ_KEYS if key[0] == "todos" else PROFILE_READ_KEYS
        if set(row) != want:
            problems.append(("shape", f"{route} showed a row with fields {sorted(row)}, not {sorted(want)}"))
        assert cmd.data is not None
        wrong = {name: (row.get(name), value) for name, value in cmd.data.items() if row.get(name) != value}
        if wrong:
            problems.append(("content", f"{route} showed {cmd.label()} with fields differing (shown, sent): {wrong}"))
        problems += self._check_stamps(key, cmd, row, view, route, cache_may_be_stale)
        problems += self.check_session(key, cmd, view, route)
        return cmd, problems

    def _check_stamps(
        self, key: Key, cmd: Cmd, row: dict[str, Any], view: View, route: str, cache_may_be_stale: bool
    ) -> list[Problem]:
        problems: list[Problem] = []
        try:
            updated = instant_us(row.get("updated_at"))  # type: ignore[arg-type]
            created = instant_us(row.get("created_at"))  # type: ignore[arg-type]
        except ValueError as exc:
            return [("shape", f"{route}: {exc}")]
        if updated != cmd.version:
            problems.append(("updated_at", f"{route} showed updated_at {row['updated_at']} for {cmd.label()}"))
        cmds = self.by_key[key]
        if created not in {c.version for c in cmds}:
            problems.append(
                ("created_at", f"{route} showed created_at {row['created_at']}, the `at` of no command of {key}")
            )
        if cache_may_be_stale:
            return problems
        first = min(cmds, key=lambda c: c.version)
        if created != first.version and self.visible(first, view):
            problems.append(
                (
                    "created_at",
                    f"{route} showed {cmd.label()} with created_at {row['created_at']}, but the row's earliest "
                    f"command, {first.label()} at {us_text(first.version)}, is loaded and readable "
                    f"(the {view.db} answered)",
                )
            )
        generation = self.generation[key[1]]
        seen = self.created_seen.get(key)
        if seen is not None and seen[0] == generation and seen[1] == cmd.seq and seen[2] != row["created_at"]:
            problems.append(
                (
                    "created_at",
                    f"{cmd.label()}: {seen[3]} showed created_at {seen[2]}, then {route} showed "
                    f"{row['created_at']}, with nothing written, loaded or expired in between",
                )
            )
        self.created_seen[key] = (generation, cmd.seq, row["created_at"], route)
        return problems

    def check_session(self, key: Key, shown: Cmd | None, view: View, route: str) -> list[Problem]:
        """No read shows a state older than the caller's kept pending write (a deleted or missing
        row is `shown` None: it must be a delete at least as new)."""
        floor = self.floor(key, view)
        if floor is None:
            return []
        if shown is not None:
            if shown.order < floor.order:
                return [
                    (
                        "session",
                        f"{route} showed {shown.label()}, older in (version, op_id) than {floor.label()}, "
                        "which the caller was answered 202 for and whose pending entry Redis keeps",
                    )
                ]
            return []
        if not any(c.op == "delete" and c.order >= floor.order for c in self.by_key[key]):
            return [
                (
                    "session",
                    f"{route} showed no row for {key}, but the caller was answered 202 for {floor.label()} "
                    "(its pending entry kept) and no delete at least as new was accepted",
                )
            ]
        return []

    def check_min_version(
        self, key: Key, status: int, shown: Cmd | None, min_version: int, view: View, route: str
    ) -> list[Problem]:
        """`min_version=V`: version V or newer, 404 only for a tombstone at or after V, or 503 only
        when neither the pending writes nor the database can show V yet."""
        if status == 200:
            if shown is not None and shown.version < min_version:
                return [("min_version", f"{route}?min_version={min_version} showed the older {shown.label()}")]
            return []
        if status == 404:
            if not any(c.op == "delete" and c.version >= min_version for c in self.by_key.get(key, ())):
                return [
                    (
                        "min_version",
                        f"{route}?min_version={min_version} answered 404, but no delete of {key} at or after "
                        "that version was accepted",
                    )
                ]
            return []
        if status == 503:
            entry = self.floor(key, view)
            readable = [c for c in self.by_key.get(key, ()) if c.version >= min_version and self.visible(c, view)]
            if entry is not None and entry.version >= min_version:
                readable.append(entry)
            if readable:
                return [
                    (
                        "min_version",
                        f"{route}?min_version={min_version} answered 503, but {readable[0].label()} is "
                        + ("kept pending" if readable[0] is entry else f"loaded and readable on the {view.db}"),
                    )
                ]
        return []

    def check_page(
        self,
        owner: str,
        rows: list[Any],
        after: str | None,
        end: str | None,
        state: str | None,
        view: View,
        route: str,
    ) -> tuple[list[str], list[Problem]]:
        """One page of a walk (rows with id in (after, end], end None: to the last): each row as
        `check_row` and the filter; every key whose state is determinate in that range, live and
        matching the filter, present; no other determinate key shown in another state. Returns
        the ids shown."""
        problems: list[Problem] = []
        ids: list[str] = []
        for row in rows:
            key = ("todos", owner, row.get("id") if isinstance(row, dict) else None)
            cmd, found = self.check_row(key, row, view, route)  # type: ignore[arg-type]
            problems += found
            ids.append(str(key[2]))
            if cmd is None:
                continue
            if state is not None and row.get("state") != state:
                problems.append(("filter", f"{route} with state={state} showed {cmd.label()} in state {row['state']}"))
            must = self.determinate(key, view)  # type: ignore[arg-type]
            if must is not None and must is not cmd:
                problems.append(
                    ("determinate", f"{route} showed {cmd.label()}, but every read must show {must.label()} by now")
                )
        shown = set(ids)
        for key in self.owner_keys(owner):
            id_ = key[2]
            if (after is not None and id_ <= after) or (end is not None and id_ > end) or id_ in shown:
                continue
            must = self.determinate(key, view)
            if must is None or not must.live:
                continue
            assert must.data is not None
            if state is None or must.data["state"] == state:
                floor = self.floor(key, view)
                why = "the caller's kept pending write" if floor is must else f"loaded and readable on the {view.db}"
                problems.append(
                    ("paging", f"{route} skipped {must.label()} ({why}), whose id {id_} is within the page's range")
                )
        return ids, problems


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
