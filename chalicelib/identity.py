"""Who is calling: only the authorizer's claims count (CONTRACT section 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import unauthorized

ADMIN_GROUP = "admins"
ASCII_SPACE = " \t\r\n\f\v"  # str.strip() would also take U+00A0, U+3000 and the like
MAX_SUB_CHARS = 128


@dataclass(frozen=True)
class Principal:
    sub: str
    groups: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups


def parse_groups(raw: Any) -> frozenset[str]:
    """`cognito:groups` as a list (chalice local) or a string: "admins", "a,b" or "[a b]"."""
    if raw is None:
        return frozenset()
    if isinstance(raw, (list, tuple)):
        return frozenset(g for g in raw if isinstance(g, str) and g)
    if isinstance(raw, str):
        text = raw.strip(ASCII_SPACE)
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        # ASCII separators only: a group name holding U+00A0 or U+3000 stays one (unknown) name
        return frozenset(g for g in re.split(r"[,\s]+", text, flags=re.ASCII) if g)
    return frozenset()


def principal_from_context(context: Any) -> Principal:
    """The caller from requestContext.authorizer.claims; 401 when there is no usable `sub`."""
    if not isinstance(context, dict):
        raise unauthorized()
    authorizer = context.get("authorizer")
    claims = authorizer.get("claims") if isinstance(authorizer, dict) else None
    if not isinstance(claims, dict):
        raise unauthorized()
    sub = claims.get("sub")
    raw_groups = claims.get("cognito:groups")
    # Claims of exactly these types key the callers kept (a str subclass could compare equal and differ)
    key = (sub, raw_groups) if type(sub) is str and (raw_groups is None or type(raw_groups) is str) else None
    if key is not None:
        known = _PRINCIPALS.get(key)
        if known is not None:
            return known
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUB_CHARS or not sub.isprintable() or sub.strip() != sub:
        raise unauthorized()
    principal = Principal(sub=sub, groups=parse_groups(raw_groups))
    if key is not None:
        if len(_PRINCIPALS) >= _MAX_PRINCIPALS:
            _PRINCIPALS.clear()
        _PRINCIPALS[key] = principal
    return principal


# (sub, raw `cognito:groups` text) -> the caller those claims gave, checked: a warm Lambda sees the
# same few callers again and again, and a Principal is frozen, so it is kept rather than rebuilt.
_PRINCIPALS: dict[tuple[str, str | None], Principal] = {}
_MAX_PRINCIPALS = 256
