"""What a process remembers of its owners' pending writes for their next page read (`Guess`): a
page query is sent before the HGETALL's reply is read (`PendingWrites.list_rows`), naming the
pending ids the process last saw for the owner, and asking for as many rows as they may take out
of the page or add to it. Learnt from each page read (`learn`) and from each recorded write
(`remember`); a wrong guess costs one more query in `merge_page`, never a wrong page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from chalicelib.readers import Filters, Row, ids_and_rows
from chalicelib.readers.pending_entry import ID_CAP, PendingEntry
from chalicelib.readers.pending_merge import Fetched
from chalicelib.resources import RESOURCES, Resource

if TYPE_CHECKING:
    from chalicelib.commands import WriteCommand

GUESSES = 1024  # owners whose pending ids a process remembers for its next page query


class Guess(NamedTuple):
    """What a process last saw of an owner's pending rows of one resource, for its next page
    query (sent before the HGETALL's reply is read): the ids it names, and how many rows to ask for."""

    ids: list[str]  # pending ids, ascending
    deletes: frozenset[str]  # the deletes among them: a loaded row each may take out of a page
    new: frozenset[str] = frozenset()  # puts of nothing stored that the last page showed
    page: tuple[str | None, tuple[tuple[str, str], ...], int] | None = None  # that page's (after, filters, limit)
    source: object = None  # the entries (pending_reply.PageEntries) it was learnt from, if any
    plan: tuple[int, list[str]] | None = None  # `plan(self, that page)`, made once


NO_GUESS = Guess([], frozenset())
# Per (owner's hash, resource): what this process last saw of the pending rows.
Guesses = dict[tuple[str, str], Guess]


class Page(NamedTuple):
    """One page read: whose, of what, from where, how many, filtered how."""

    resource: Resource
    owner: str
    after: str | None
    limit: int
    filters: Filters

    @property
    def key(self) -> tuple[str | None, tuple[tuple[str, str], ...], int]:
        """What makes it the same page as an earlier read (Guess.page)."""
        return (self.after, tuple(sorted(self.filters.items())), self.limit)


def remember(guesses: Guesses, hash_key: str, commands: Sequence[WriteCommand]) -> None:
    """Add recorded writes to the owner's guess of their resource (the writer's next page names them)."""
    for resource in {c.resource for c in commands if RESOURCES[c.resource].collection is not None}:
        key = (hash_key, resource)
        guess = guesses.pop(key, NO_GUESS)
        ids = set(guess.ids)
        gone = set(guess.deletes)
        for command in commands:
            if command.resource == resource:
                ids.add(command.id)
                (gone.add if command.op == "delete" else gone.discard)(command.id)
        if len(guesses) >= GUESSES:
            guesses.pop(next(iter(guesses)), None)
        guesses[key] = Guess(sorted(ids), frozenset(gone), guess.new - gone, guess.page)


def learn(
    guesses: Guesses,
    hash_key: str,
    page: Page,
    pending: Mapping[str, PendingEntry],
    first: Fetched,
    shown: list[Row],
    deletes: frozenset[str] | None = None,
    source: object = None,
) -> None:
    """What a page read (its first batch `first`, the rows it showed) teaches of the owner's
    pending rows: the guess of the next page query, or none when nothing is pending.
    `deletes`: the ids of the deletes among `pending`, when the caller has them; `source`: the
    entries object they come from (`Guess.source`: the same entries and page teach the same)."""
    key = (hash_key, page.resource.name)
    guesses.pop(key, None)
    if not pending:
        return
    if len(guesses) >= GUESSES:
        guesses.pop(next(iter(guesses)), None)
    if deletes is None:
        deletes = frozenset(i for i, w in pending.items() if w.data is None)
    # Named puts of which the page query found nothing stored (below the batch's last id,
    # when it was full): new rows, each in the page in place of a loaded row (learnt
    # without a filter only; with one, every named id is fetched beyond the page anyway).
    new: frozenset[str] | set[str] = frozenset()
    if first.ids and not page.filters:
        batch = ids_and_rows(first.rows)[0]
        top = batch[-1] if batch and len(batch) >= first.limit else None
        end = shown[-1]["id"] if shown and len(shown) >= page.limit else None  # the page's last id, when full
        # Of the named puts (not deletes) that are pending, those below both ends and not stored.
        candidates = [
            i
            for i in first.ids
            if i in pending and i not in deletes and (top is None or i < top) and (end is None or i <= end)
        ]
        if candidates:
            new = set(candidates).difference(batch)
    made = Guess(sorted(pending), deletes, frozenset(new), page.key, source)
    guesses[key] = made._replace(plan=plan(made, page))


def plan(guess: Guess, page: Page) -> tuple[int, list[str]]:
    """How many rows a page query asks for, and the pending ids it names: those of the guess
    after the page's cursor. Rows the guessed pending writes may take out of the page are
    fetched beyond it at once; new rows the same page showed last time take places, so fewer
    loaded rows are asked for. A wrong guess costs one more query in merge_page, never a wrong
    page. The guess's own page's plan is made once (`Guess.plan`)."""
    after, limit, filters = page.after, page.limit, page.filters
    if guess.plan is not None and guess.page == page.key:
        return guess.plan
    ids = guess.ids[:ID_CAP] if after is None else [i for i in guess.ids if i > after][:ID_CAP]
    if not ids:
        return limit, ids
    n = limit + (len(ids) if filters else sum(1 for i in ids if i in guess.deletes))
    if guess.new and guess.page == page.key:
        n = max(1, n - sum(1 for i in ids if i in guess.new))
    return n, ids
