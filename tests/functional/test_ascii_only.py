"""Untrusted input takes ASCII digits and ASCII whitespace only (CONTRACT section 3: "Input
date-times use ASCII digits only"). Python's `\\d`, `isdigit`, `int()` and `strip()` also take
Arabic-Indic, fullwidth and other Unicode digits and spaces; none of them may pass anywhere."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from chalicelib.identity import parse_groups
from chalicelib.ids import parse_rfc3339
from chalicelib.models import Invalid, validate_todo
from tests.conftest import auth, body

ARABIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
FULLWIDTH = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")
DEVANAGARI = str.maketrans("0123456789", "\u0966\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e\u096f")
GOOD_DUE = "2030-01-02T03:04:05.5+01:00"


def variants(text: str) -> list[str]:
    """`text` with all its digits, and with just one digit at a time, from other scripts."""
    out = [text.translate(t) for t in (ARABIC, FULLWIDTH, DEVANAGARI)]
    for position, char in enumerate(text):
        if char.isdigit():
            out.append(text[:position] + char.translate(ARABIC) + text[position + 1 :])
    return out


@pytest.mark.parametrize("value", variants(GOOD_DUE))
def test_due_at_with_any_non_ascii_digit_is_a_validation_error(value: str) -> None:
    assert parse_rfc3339(GOOD_DUE)  # the ASCII original is fine
    with pytest.raises(ValueError):
        parse_rfc3339(value)
    with pytest.raises(Invalid) as caught:
        validate_todo({"title": "t", "due_at": value})
    assert list(caught.value.fields) == ["due_at"]


def test_due_at_with_non_ascii_digits_is_400_over_http(client: Any) -> None:
    for value in variants("2030-01-02T03:04:05Z")[:3]:
        answer = client.http.post("/todos", headers=auth(), body=body({"title": "t", "due_at": value}))
        assert answer.status_code == 400, value
        assert answer.json_body["error"] == "validation_error" and "due_at" in answer.json_body["fields"]
    assert client.http.post("/todos", headers=auth(), body=body({"title": "t", "due_at": GOOD_DUE})).status_code == 202


@pytest.mark.parametrize(
    "value", [*variants("10"), "\u00b2", "1\u00b2", "\u2460", "\u00bd", " 10", "10 ", "+10", "1_0"]
)
def test_limit_with_non_ascii_digits_is_invalid_query(client: Any, value: str) -> None:
    answer = client.http.get("/todos?" + urlencode({"limit": value}), headers=auth())
    assert answer.status_code == 400, value
    assert answer.json_body["error"] == "invalid_query"


def test_the_ascii_limit_is_fine(client: Any) -> None:
    assert client.http.get("/todos?limit=10", headers=auth()).status_code == 200


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


GOOD_ID = "0190b2a0-1234-7abc-8def-0123456789ab"


@pytest.mark.parametrize(
    "cursor",
    [
        *(b64(json.dumps({"after": v}, ensure_ascii=False).encode()) for v in variants(GOOD_ID)[:4]),
        b64(json.dumps({"after": GOOD_ID}).encode()).translate(FULLWIDTH),
        b64(json.dumps({"after": GOOD_ID}).encode()) + "\u3000",
        "!" + b64(json.dumps({"after": GOOD_ID}).encode()),  # base64 would skip the "!"
    ],
)
def test_cursors_with_non_ascii_digits_or_foreign_characters_are_invalid_query(client: Any, cursor: str) -> None:
    answer = client.http.get("/todos?" + urlencode({"cursor": cursor}), headers=auth())
    assert answer.status_code == 400, cursor
    assert answer.json_body["error"] == "invalid_query"


def test_a_cursor_as_the_api_writes_it_is_fine(client: Any) -> None:
    cursor = b64(json.dumps({"after": GOOD_ID}).encode())
    assert client.http.get("/todos?" + urlencode({"cursor": cursor}), headers=auth()).status_code == 200


@pytest.mark.parametrize("todo_id", variants(GOOD_ID)[:5])
def test_ids_with_non_ascii_digits_are_invalid_id(client: Any, todo_id: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        answer = client.http.request(method, f"/todos/{todo_id}", headers=auth(), body=body({"title": "t"}))
        assert answer.status_code == 400 and answer.json_body["error"] == "invalid_id", (method, todo_id)


@pytest.mark.parametrize("key", ["key-\uff11", "key-\u0661", "\u00b2"])
def test_idempotency_keys_with_non_ascii_digits_are_a_validation_error(client: Any, key: str) -> None:
    headers = {**auth(), "Idempotency-Key": key}
    answer = client.http.post("/todos", headers=headers, body=body({"title": "t"}))
    assert answer.status_code == 400 and "Idempotency-Key" in answer.json_body["fields"]


def test_if_none_match_with_non_ascii_digits_never_matches(client: Any) -> None:
    done = client.http.post("/todos", headers=auth(), body=body({"title": "t"})).json_body
    etag = f'"{done["version"]}"'
    for same in (etag, f" {etag}\t", f"W/{etag}", f'"1", {etag}', "*"):
        assert client.http.get(f"/todos/{done['id']}", headers={**auth(), "If-None-Match": same}).status_code == 304
    for other in [*variants(etag)[:3], etag + "\u00a0", "\u3000" + etag, "\u00a0*"]:
        answer = client.http.get(f"/todos/{done['id']}", headers={**auth(), "If-None-Match": other})
        assert answer.status_code == 200, other


@pytest.mark.parametrize("space", ["\u00a0", "\u3000", "\u2028", "\u0085"])
def test_content_type_takes_only_ascii_whitespace_around_the_media_type(client: Any, space: str) -> None:
    headers = {**auth(), "Content-Type": f"application/json{space}"}
    answer = client.http.post("/todos", headers=headers, body=body({"title": "t"}))
    assert answer.status_code == 415 and answer.json_body["error"] == "unsupported_media_type"
    headers = {**auth(), "Content-Type": "application/json ; charset=utf-8"}
    assert client.http.post("/todos", headers=headers, body=body({"title": "t"})).status_code == 202


@pytest.mark.parametrize(
    ("raw", "admin"),
    [
        ("[admins other]", True),
        ("admins,other", True),
        (" admins ", True),
        ("[admins\u00a0other]", False),
        ("admins\u3000", False),
        ("\u2003admins", False),
        ("[admins\u2028]", False),
    ],
)
def test_groups_split_on_ascii_separators_only(raw: str, admin: bool) -> None:
    assert ("admins" in parse_groups(raw)) is admin
