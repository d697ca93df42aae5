"""The resources, declared once (CONTRACT section 3): each is a dataclass whose fields carry, in
their metadata, the type, limits, default, format and storage of what a client writes.

Everything else is derived from these declarations or tested against them:
- the validators (`chalicelib.models`) take their limits and patterns from here;
- the OpenAPI schemas (`chalicelib.openapi`) are built from `Rule.schema()`;
- the DDL's column types (`chalicelib.db.schema`) are checked against `Rule.mysql` by a test;
- the loader's line lane (`chalicelib.commands`) builds its pattern from these limits;
- the rows reads and the cache show (`read_fields`), and the loader's table columns;
- the reference JSON form of commands and documents (`chalicelib.wire`, dataclasses-json).

Import-light on purpose (the standard library only): a GET's cold start imports it through the
validators. dataclasses-json is applied to these classes only in `chalicelib.wire`.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

META = "sluice"  # our key in a field's metadata (dataclasses-json keeps its own, "dataclasses_json")


@dataclass(frozen=True)
class Rule:
    """What one written field may hold, and how it is stored.

    kind: "text" (a string of min_length..max_length characters, matching `pattern` when given),
    "choice" (one of `choices`), "list" (a list of at most max_items distinct strings, each
    matching `pattern`), "datetime" (RFC 3339 with an offset, or null; at most max_length
    characters as written). `mysql` is the column type in MySQL/MariaDB (SQLite keeps TEXT).
    """

    kind: str
    mysql: str
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    max_items: int | None = None
    unique: bool = False
    nullable: bool = False
    description: str | None = None


def rule(kind: str, mysql: str, **limits: Any) -> dict[str, Rule]:
    """A field's metadata holding its Rule."""
    return {META: Rule(kind, mysql, **limits)}


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
# zone exists is checked by the validator against that list (models.time_zones).
TIMEZONE_PATTERN = r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*"
ASCII = "CHARACTER SET ascii COLLATE ascii_bin"


@dataclass
class Todo:
    """A todo as written (POST/PUT body, a command's data)."""

    title: str = field(metadata=rule("text", "VARCHAR(200)", min_length=1, max_length=200))
    notes: str = field(default="", metadata=rule("text", "TEXT", max_length=10_000))
    state: str = field(default="open", metadata=rule("choice", f"VARCHAR(8) {ASCII}", choices=("open", "done")))
    tags: list[str] = field(
        default_factory=list,
        metadata=rule("list", f"VARCHAR(1024) {ASCII}", max_items=20, unique=True, pattern=TAG_PATTERN),
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
            description=(
                "A canonical IANA time zone name, such as Europe/Paris, as the tzdata package lists it "
                "(the host's zone files do not count: localtime, posixrules and paths are not zone names)."
            ),
        ),
    )


@dataclass(frozen=True)
class Resource:
    """A resource: its name on the wire and in the database, its document, and its key."""

    name: str
    document: type
    by_id: bool  # keyed by (owner, id); otherwise by owner alone (id equals owner)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.document))

    @property
    def read_fields(self) -> tuple[str, ...]:
        """A row as GET shows it (and the cache keeps it), in order."""
        return (("id",) if self.by_id else ()) + self.field_names + ("version", "created_at", "updated_at")

    def rules(self) -> dict[str, Rule]:
        return {f.name: f.metadata[META] for f in fields(self.document)}

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


TODOS = Resource("todos", Todo, by_id=True)
PROFILES = Resource("profiles", Profile, by_id=False)
RESOURCES: dict[str, Resource] = {r.name: r for r in (TODOS, PROFILES)}
