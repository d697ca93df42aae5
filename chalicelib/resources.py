"""The resources, declared once (CONTRACT section 3): each is a dataclass whose fields carry, in
their metadata, the rule of what a client writes (kind, limits, default, format, storage, and the
command schema version the field appeared in), and a `Resource` that names it, gives its key and
the routes of its collection.

Everything else is generated from these declarations, once per process, or tested against them
(docs/architecture.md, "Resources, declared once"):
- the validators, fast and with field errors (`chalicelib.models`);
- the OpenAPI schemas and paths (`chalicelib.openapi`);
- the DDL for SQLite and MySQL/MariaDB (`chalicelib.db.migrations.table_ddl`; migrations are checked
  against it);
- the column lists, row decoding by name, tombstone defaults and the `LOAD DATA` row text
  (`chalicelib.rows`), and the loader's line lanes (`chalicelib.loader.lanes`);
- cache and pending-write entries (`chalicelib.readers`), and the routes (`chalicelib.routes`);
- the reference JSON form of commands and documents (`chalicelib.wire`, dataclasses-json);
- the tests' factories and hypothesis strategies (`tests/factories.py`).

Import-light on purpose (the standard library only): a GET's cold start imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any

META = "sluice"  # our key in a field's metadata (dataclasses-json keeps its own, "dataclasses_json")
KINDS = ("text", "choice", "integer", "uuid", "list", "datetime")


@dataclass(frozen=True)
class Rule:
    """What one written field may hold, and how it is stored.

    kind:
    - "text": a string of min_length..max_length characters, matching `pattern` when given, and
      one of `known()` when given;
    - "choice": one of `choices`;
    - "integer": a JSON integer from `minimum` to `maximum` (not 3.0, "3", true or null);
    - "uuid": a canonical UUID string (lowercase, hyphenated), or null when `nullable`;
    - "list": at most max_items strings (distinct when `unique`), each matching `pattern`;
    - "datetime": RFC 3339 with an offset, or null; at most max_length characters as written.
    `mysql` is the column type in MySQL/MariaDB (SQLite keeps TEXT, or INTEGER for integers).
    `hint` is the message when `pattern` or `known` refuses a value (default: the pattern);
    `noun` names a list's items in messages. `since` is the command schema version (CONTRACT
    section 4, `v`) in which the field appeared: commands of an older version must not carry it,
    and load with its default.
    """

    kind: str
    mysql: str
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_items: int | None = None
    unique: bool = False
    nullable: bool = False
    description: str | None = None
    hint: str | None = None
    known: Callable[[], frozenset[str]] | None = None
    noun: str = "item"
    since: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}; one of {', '.join(KINDS)}")


def rule(kind: str, mysql: str, **limits: Any) -> dict[str, Rule]:
    """A field's metadata holding its Rule."""
    return {META: Rule(kind, mysql, **limits)}


@dataclass(frozen=True)
class Collection:
    """The routes of a resource keyed by (owner, id): `POST` and `GET` on its path, and `GET`,
    `PUT` and `DELETE` on `{path}/{id}`. `filters` are the fields a page may be filtered on
    (`?state=`, `?list_id=`: choice and uuid fields); `batch` is the most items of
    `POST {path}/batch` (0: no batch route); `admin` adds `GET /users/{sub}{path}` for admins."""

    filters: tuple[str, ...] = ()
    limit_min: int = 1
    limit_max: int = 100
    limit_default: int = 50
    batch: int = 0
    admin: bool = False


@dataclass(frozen=True)
class Resource:
    """A resource: its name on the wire and in the database, its document, its key and routes.

    by_id: keyed by (owner, id), and then `collection` gives its routes; otherwise one row per
    owner (the command's id equals its owner), read and written at `path`.
    tag: the short name of its pending writes' fields (readers/pending_entry.py); singular: its name
    in routes' parameters and the OpenAPI document. since: the command schema version in which
    the resource appeared (a command of an older version naming it is a reject).
    """

    name: str
    document: type
    by_id: bool
    singular: str
    tag: str
    path: str = ""
    collection: Collection | None = None
    since: int = 1

    @property
    def field_names(self) -> tuple[str, ...]:
        return _field_names(self.document)

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ("owner", "id") if self.by_id else ("owner",)

    @property
    def read_fields(self) -> tuple[str, ...]:
        """A row as GET shows it (and the cache keeps it), in order."""
        return (("id",) if self.by_id else ()) + self.field_names + ("version", "created_at", "updated_at")

    def rules(self) -> dict[str, Rule]:
        return _rules(self.document)

    def defaults(self) -> dict[str, Any]:
        """The default of each optional field (fresh lists)."""
        out: dict[str, Any] = {}
        for f in fields(self.document):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
        return out

    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.document) if f.default is MISSING and f.default_factory is MISSING)

    def fields_at(self, version: int) -> tuple[str, ...]:
        """The fields a command of schema version `version` may carry."""
        rules = self.rules()
        return tuple(name for name in self.field_names if rules[name].since <= version)

    @property
    def newest(self) -> int:
        """The schema version of its newest field (or of the resource itself)."""
        return max([self.since, *(r.since for r in self.rules().values())])


@cache
def _field_names(document: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(document))


@cache
def _rules_cached(document: type) -> tuple[tuple[str, Rule], ...]:
    return tuple((f.name, f.metadata[META]) for f in fields(document))


def _rules(document: type) -> dict[str, Rule]:
    return dict(_rules_cached(document))


# -- shared patterns ------------------------------------------------------------------------------
TAG_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
# RFC 5646 language tags, well-formed (not checked against the registry).
BCP47_PATTERN = (
    r"(?:(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*"
    r"(?:-[Xx](?:-[A-Za-z0-9]{1,8})+)?"
    r"|[Xx](?:-[A-Za-z0-9]{1,8})+)"
)
# IANA zone names: every name in tzdata's list matches this (checked by the tests); whether the
# zone exists is checked against that list (time_zones).
TIMEZONE_PATTERN = r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*"
ASCII = "CHARACTER SET ascii COLLATE ascii_bin"
UUID_COLUMN = f"CHAR(36) {ASCII}"
# Names in tzdata's list that name no place: "Factory" (a zone whose abbreviation says "-00").
NOT_ZONES = frozenset(("Factory",))


@cache
def time_zones() -> frozenset[str]:
    """The IANA zone names a profile may hold: the list the `tzdata` package ships (a requirement),
    read from the package itself, so the host's zone files never decide what is valid (they add
    `localtime`, `posixrules` and the like, or lack zones) and every name loads with zoneinfo."""
    from importlib import resources

    text = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(name for name in text.split("\n") if name) - NOT_ZONES


# -- the declarations -----------------------------------------------------------------------------
@dataclass
class Todo:
    """A todo as written (POST/PUT body, a command's data)."""

    title: str = field(metadata=rule("text", "VARCHAR(200)", min_length=1, max_length=200))
    notes: str = field(default="", metadata=rule("text", "TEXT", max_length=10_000))
    state: str = field(default="open", metadata=rule("choice", f"VARCHAR(8) {ASCII}", choices=("open", "done")))
    tags: list[str] = field(
        default_factory=list,
        metadata=rule("list", f"VARCHAR(1024) {ASCII}", max_items=20, unique=True, pattern=TAG_PATTERN, noun="tag"),
    )
    due_at: str | None = field(
        default=None,
        metadata=rule(
            "datetime",
            f"VARCHAR(40) {ASCII}",
            max_length=64,
            nullable=True,
            description="RFC 3339 date-time with an offset; returned in UTC.",
        ),
    )
    priority: int = field(
        default=3,
        metadata=rule("integer", "TINYINT", minimum=1, maximum=5, since=2, description="1 (highest) to 5."),
    )
    list_id: str | None = field(
        default=None,
        metadata=rule(
            "uuid",
            UUID_COLUMN,
            nullable=True,
            since=2,
            description="The list the todo belongs to, or null; not checked against existing lists.",
        ),
    )


@dataclass
class TodoList:
    """A list as written (POST/PUT body, a command's data)."""

    name: str = field(metadata=rule("text", "VARCHAR(100)", min_length=1, max_length=100))
    position: int = field(
        default=0,
        metadata=rule(
            "integer",
            "INT",
            minimum=0,
            maximum=1_000_000,
            description="The client's own ordering hint; pages are still in id order.",
        ),
    )


@dataclass
class Profile:
    """A profile as written (PUT /me body, a command's data)."""

    display_name: str = field(metadata=rule("text", "VARCHAR(100)", min_length=1, max_length=100))
    locale: str = field(
        default="en",
        metadata=rule(
            "text",
            f"VARCHAR(35) {ASCII}",
            min_length=1,
            max_length=35,
            pattern=BCP47_PATTERN,
            hint="must be a BCP 47 language tag, such as en or pt-BR",
            description="A well-formed BCP 47 language tag, such as en or pt-BR.",
        ),
    )
    timezone: str = field(
        default="UTC",
        metadata=rule(
            "text",
            f"VARCHAR(64) {ASCII}",
            min_length=1,
            max_length=64,
            pattern=TIMEZONE_PATTERN,
            known=time_zones,
            hint="must be an IANA time zone name, such as Europe/Paris",
            description=(
                "A canonical IANA time zone name, such as Europe/Paris, as the tzdata package lists it "
                "(the host's zone files do not count: localtime, posixrules and paths are not zone names)."
            ),
        ),
    )


TODOS = Resource(
    "todos",
    Todo,
    by_id=True,
    singular="todo",
    tag="t",
    path="/todos",
    collection=Collection(filters=("state", "list_id"), batch=100, admin=True),
)
LISTS = Resource(
    "lists", TodoList, by_id=True, singular="list", tag="l", path="/lists", collection=Collection(), since=2
)
PROFILES = Resource("profiles", Profile, by_id=False, singular="profile", tag="p", path="/me")
RESOURCES: dict[str, Resource] = {r.name: r for r in (TODOS, LISTS, PROFILES)}

# The command schema version this release writes (CONTRACT section 4): the newest `since` of
# any declaration. A release that adds a field or a resource declares it with the next version.
SCHEMA_VERSION = max(r.newest for r in RESOURCES.values())

# What was generated from a declaration, per module (validators, tables, lanes, ...): each module
# registers how to drop what it made for a resource, for resources declared at run time.
_generated: list[Callable[[str], object]] = []


def on_change(drop: Callable[[str], object]) -> None:
    """Register `drop(name)`, called when the resource `name` is declared or forgotten."""
    _generated.append(drop)


def declare(resource: Resource) -> None:
    """Add a resource at run time (tests declare throwaway ones): everything is generated for it
    on first use, as for the resources declared above."""
    if resource.newest > SCHEMA_VERSION:
        raise ValueError(f"{resource.name}: schema version {resource.newest} is newer than {SCHEMA_VERSION}")
    RESOURCES[resource.name] = resource
    for drop in _generated:
        drop(resource.name)


def forget(name: str) -> None:
    """Remove a resource declared at run time, and what was generated from it."""
    RESOURCES.pop(name, None)
    for drop in _generated:
        drop(name)
