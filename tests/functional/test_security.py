"""Security: who the caller is, what they may touch, and what hostile input gets back
(CONTRACT sections 2 and 3).

Two ways in: chalice's test client (tokens decoded by the local gateway, claims typed as in the
token), and Lambda events built by hand as production's API Gateway sends them (every claim a
string, `cognito:groups` too), invoked with `app.app(event, context)`.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from chalicelib.config import DEFAULT_MAX_BODY_BYTES
from tests.conftest import auth, body, token
from tests.gateway import LambdaContext, call, prod_claims, rest_event

TODO = {"title": "alice's secret", "notes": "n", "state": "open", "tags": ["a"], "due_at": None}
LIMIT = DEFAULT_MAX_BODY_BYTES
ERROR_KEYS = {"error", "message", "fields"}
LEAKS = ("traceback", "sqlite", "pymysql", "chalicelib", ".py", "operationalerror", "mysql://", "errno")
SQL_WORDS = ("SELECT", "INSERT", "UPDATE ", "FROM todos", "WHERE ")


# -- helpers -------------------------------------------------------------------------------------
def clean_error(status: int, payload: Any, code: str | None = None) -> dict[str, Any]:
    """An error body: only error/message/fields (a batch's 503 too), nothing internal."""
    assert isinstance(payload, dict), payload
    assert set(payload) <= ERROR_KEYS and {"error", "message"} <= set(payload), payload
    assert isinstance(payload["error"], str) and isinstance(payload["message"], str)
    if "fields" in payload:
        assert payload["error"] == "validation_error"
        assert all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in payload["fields"].values())
    text = json.dumps(payload)
    for leak in LEAKS:
        assert leak not in text.lower(), (leak, payload)
    for word in SQL_WORDS:
        assert word not in text, (word, payload)
    if code is not None:
        assert payload["error"] == code, payload
    assert status >= 400
    return payload


def err(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.body)
    return clean_error(response.status_code, json.loads(response.body), code)


def create(client: Any, sub: str = "alice", payload: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.http.post("/todos", headers=auth(sub), body=body(payload or TODO))
    assert response.status_code == 202, response.body
    return dict(response.json_body)


def rows(services: Any, todo_id: str) -> list[tuple[Any, ...]]:
    """(owner, title, version, deleted) of every stored row with this id, whoever owns it."""
    found = services.master.query(
        "SELECT owner, title, version, deleted FROM todos WHERE id = %s ORDER BY owner", (todo_id,)
    )
    return [tuple(r) for r in found]


def prod(
    method: str,
    resource: str,
    path: str,
    sub: str | None = "alice",
    groups: str | None = None,
    claims: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[int, dict[str, str], Any]:
    """A request as production's API Gateway hands it to the Lambda (claims are strings)."""
    import app

    if claims is None and sub is not None:
        claims = prod_claims(sub, groups)
    return call(app.app, rest_event(method, resource, path, claims=claims, **kwargs), LambdaContext())


JSON_HEADERS = {"Content-Type": "application/json", "Authorization": "ignored-in-production"}


# -- open routes ---------------------------------------------------------------------------------
def test_only_health_and_the_document_are_open(client: Any) -> None:
    from chalicelib.openapi import document

    assert client.http.get("/health").status_code == 200
    served = client.http.get("/openapi.json")
    assert served.status_code == 200 and served.json_body == document()
    import app

    open_routes = {(p, m) for p, ms in app.app.routes.items() for m, e in ms.items() if e.authorizer is None}
    assert open_routes == {("/health", "GET"), ("/openapi.json", "GET")}
    assert app.app.debug is False, "debug mode would send stack traces to clients"


# -- identity only from the authorizer's claims ------------------------------------------------------
IDENTITY_HEADERS = {
    "X-User": "alice",
    "X-Sub": "alice",
    "sub": "alice",
    "X-Amzn-Oidc-Identity": "alice",
    "X-Forwarded-User": "alice",
    "X-Remote-User": "alice",
    "cognito:username": "alice",
}


def test_identity_headers_query_and_path_are_ignored_without_a_token(client: Any) -> None:
    create(client, "alice")
    for method, path in [("GET", "/todos?sub=alice&owner=alice"), ("GET", "/me?sub=alice"), ("POST", "/todos")]:
        response = client.http.request(
            method, path, headers={**IDENTITY_HEADERS, "Content-Type": "application/json"}, body=body(TODO)
        )
        err(response, 401, "unauthorized")
    err(client.http.get("/users/alice/todos", headers=IDENTITY_HEADERS), 401, "unauthorized")


def test_identity_headers_query_and_body_never_change_who_writes(client: Any, services: Any) -> None:
    sneaky = {**auth("bob"), **IDENTITY_HEADERS}
    done = client.http.post("/todos?sub=alice&owner=alice", headers=sneaky, body=body(TODO)).json_body
    assert [r[0] for r in rows(services, done["id"])] == ["bob"]
    # owner/sub in the body are unknown fields, not identities
    for field in ("owner", "sub", "user", "cognito:username"):
        response = client.http.post("/todos", headers=auth("bob"), body=body({**TODO, field: "alice"}))
        assert field in err(response, 400, "validation_error")["fields"]
    client.http.put("/me?sub=alice", headers=sneaky, body=body({"display_name": "Bob"}))
    err(client.http.get("/me", headers=auth("alice")), 404, "not_found")
    assert client.http.get("/me", headers=auth("bob")).json_body["display_name"] == "Bob"
    assert client.http.get("/todos?sub=alice", headers=sneaky).json_body["todos"][0]["id"] == done["id"]
    assert client.http.get("/todos", headers=auth("alice")).json_body["todos"] == []


def test_the_path_grants_no_identity(client: Any) -> None:
    create(client, "alice")
    # alice reading "her own" todos through the admin route is still not allowed
    err(client.http.get("/users/alice/todos", headers=auth("alice")), 403, "forbidden")


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"cognito:username": "alice"},
        {"username": "alice", "email": "alice@example.com"},
        {"sub": ""},
        {"sub": " alice"},
        {"sub": "alice\n"},
        {"sub": "x" * 129},
    ],
)
def test_claims_without_a_usable_sub_are_401(client: Any, claims: dict[str, str]) -> None:
    status, _, payload = prod("GET", "/todos", "/todos", claims=claims, headers={"X-User": "alice"})
    assert status == 401
    clean_error(status, payload, "unauthorized")


def test_a_request_without_the_authorizer_context_is_401(client: Any) -> None:
    status, _, payload = prod("GET", "/me", "/me", sub=None, headers={"Authorization": token("alice")})
    assert status == 401
    clean_error(status, payload, "unauthorized")


def test_a_token_whose_sub_is_not_a_string_is_401(client: Any) -> None:
    from chalicelib.cli import b64_json

    for sub in (123, ["alice"], {"id": "alice"}, None, True):
        forged = f"{b64_json({'alg': 'none'})}.{b64_json({'sub': sub, 'cognito:username': 'alice'})}."
        err(client.http.get("/todos", headers={"Authorization": forged}), 401, "unauthorized")


# -- cross-user reads, writes, deletes and listing -----------------------------------------------------
def test_bob_cannot_read_alices_todo_and_learns_nothing(client: Any) -> None:
    todo_id = create(client, "alice")["id"]
    missing = client.http.get(f"/todos/{uuid.uuid4()}", headers=auth("bob"))
    theirs = client.http.get(f"/todos/{todo_id}", headers=auth("bob"))
    err(theirs, 404, "not_found")
    assert theirs.body == missing.body, "another user's todo must look exactly like no todo"
    assert "ETag" not in theirs.headers
    assert client.http.get("/todos", headers=auth("bob")).json_body == {"todos": [], "next_cursor": None}
    # If-None-Match with alice's ETag does not reveal it either
    etag = client.http.get(f"/todos/{todo_id}", headers=auth("alice")).headers["ETag"]
    err(client.http.get(f"/todos/{todo_id}", headers={**auth("bob"), "If-None-Match": etag}), 404, "not_found")
    err(client.http.get(f"/todos/{todo_id}", headers={**auth("bob"), "If-None-Match": "*"}), 404, "not_found")


def test_bobs_put_and_delete_of_alices_id_touch_only_bobs_row(client: Any, services: Any) -> None:
    todo_id = create(client, "alice")["id"]
    before = client.http.get(f"/todos/{todo_id}", headers=auth("alice")).json_body
    assert rows(services, todo_id) == [("alice", TODO["title"], before["version"], 0)]

    put = client.http.put(f"/todos/{todo_id}", headers=auth("bob"), body=body({"title": "bob was here"}))
    assert put.status_code == 202 and put.json_body["id"] == todo_id
    assert rows(services, todo_id) == [
        ("alice", TODO["title"], before["version"], 0),
        ("bob", "bob was here", put.json_body["version"], 0),
    ]
    deleted = client.http.delete(f"/todos/{todo_id}", headers=auth("bob", json_body=False))
    assert deleted.status_code == 202
    assert rows(services, todo_id) == [
        ("alice", TODO["title"], before["version"], 0),
        ("bob", "", deleted.json_body["version"], 1),
    ]
    assert client.http.get(f"/todos/{todo_id}", headers=auth("alice")).json_body == before
    err(client.http.get(f"/todos/{todo_id}", headers=auth("bob")), 404, "not_found")


def test_the_same_idempotency_key_names_different_todos_for_different_users(client: Any, services: Any) -> None:
    key = {"Idempotency-Key": "shared-key-1"}
    mine = client.http.post("/todos", headers={**auth("alice"), **key}, body=body(TODO)).json_body
    theirs = client.http.post("/todos", headers={**auth("bob"), **key}, body=body({"title": "bob"})).json_body
    assert mine["id"] != theirs["id"]
    batch = client.http.post("/todos/batch", headers={**auth("bob"), **key}, body=body({"todos": [{"title": "b"}]}))
    assert mine["id"] not in {a["id"] for a in batch.json_body["accepted"]}
    assert rows(services, mine["id"]) == [("alice", TODO["title"], mine["version"], 0)]


def test_profiles_are_per_caller(client: Any) -> None:
    client.http.put("/me", headers=auth("alice"), body=body({"display_name": "Alice"}))
    err(client.http.get("/me", headers=auth("bob")), 404, "not_found")
    client.http.put("/me", headers=auth("bob"), body=body({"display_name": "Bob"}))
    assert client.http.get("/me", headers=auth("alice")).json_body["display_name"] == "Alice"


# -- the admin route -------------------------------------------------------------------------------------
@pytest.fixture
def alices_todo(client: Any) -> str:
    return str(create(client, "alice")["id"])


@pytest.mark.parametrize(
    "groups", ["admins", "a,admins", "admins,b", "a, admins", "[a admins]", "[admins]", " admins "]
)
def test_admin_groups_as_production_sends_them(client: Any, alices_todo: str, groups: str) -> None:
    status, headers, payload = prod(
        "GET", "/users/{sub}/todos", "/users/alice/todos", sub="root", groups=groups, path_params={"sub": "alice"}
    )
    assert status == 200, payload
    assert [t["id"] for t in payload["todos"]] == [alices_todo]
    assert headers["Cache-Control"].startswith("private")


@pytest.mark.parametrize(
    "groups",
    [
        None,
        "",
        "Admins",
        "ADMINS",
        "admins2",
        "notadmins",
        "admin",
        "x-admins",
        "[Admins]",
        "a,admins2",
        "[a admin]",
        "admins-readers",
        '["admins2"]',
    ],
)
def test_admin_near_misses_are_403(client: Any, alices_todo: str, groups: str | None) -> None:
    status, _, payload = prod(
        "GET", "/users/{sub}/todos", "/users/alice/todos", sub="root", groups=groups, path_params={"sub": "alice"}
    )
    assert status == 403
    clean_error(status, payload, "forbidden")
    assert alices_todo not in json.dumps(payload)


@pytest.mark.parametrize("groups", [["admins"], ["readers", "admins"]])
def test_admin_groups_as_a_list_under_chalice_local(client: Any, alices_todo: str, groups: list[str]) -> None:
    listed = client.http.get("/users/alice/todos", headers=auth("root", groups))
    assert listed.status_code == 200 and [t["id"] for t in listed.json_body["todos"]] == [alices_todo]


@pytest.mark.parametrize("groups", [["Admins"], ["admins2"], ["notadmins"], ["admin"], ["a,admins"], [""], []])
def test_admin_near_misses_as_a_list_are_403(client: Any, alices_todo: str, groups: list[str]) -> None:
    err(client.http.get("/users/alice/todos", headers=auth("root", groups)), 403, "forbidden")


def test_admins_write_only_their_own_todos(client: Any, services: Any, alices_todo: str) -> None:
    admin = auth("root", ["admins"])
    client.http.put(f"/todos/{alices_todo}", headers=admin, body=body({"title": "admin"}))
    client.http.delete(f"/todos/{alices_todo}", headers=admin)
    assert [r[0] for r in rows(services, alices_todo) if r[3] == 0] == ["alice"]


def test_admin_route_with_hostile_subs(client: Any, alices_todo: str) -> None:
    admin = auth("root", ["admins"])
    for sub in ["alice' OR '1'='1", "alice%27--", "%25", "_", "alice%00", "*"]:
        listed = client.http.get(f"/users/{sub}/todos", headers=admin)
        if listed.status_code == 200:
            assert listed.json_body["todos"] == [], sub
        else:
            err(listed, 400, "invalid_id")
    for sub in ["x" * 129, "a\x00b", "a\nb"]:
        status, _, payload = prod(
            "GET", "/users/{sub}/todos", f"/users/{sub}/todos", sub="root", groups="admins", path_params={"sub": sub}
        )
        assert status == 400
        clean_error(status, payload, "invalid_id")


# -- hostile ids -------------------------------------------------------------------------------------------
GOOD_ID = "0190b2a0-1234-7abc-8def-0123456789ab"
HOSTILE_IDS = [
    GOOD_ID.upper(),
    GOOD_ID.replace("-", ""),
    "{" + GOOD_ID + "}",
    "urn:uuid:" + GOOD_ID,
    GOOD_ID + "\n",
    " " + GOOD_ID,
    GOOD_ID + "\x00",
    GOOD_ID[:-1] + "g",
    GOOD_ID[:-1] + "\u0661",  # an Arabic-Indic digit
    "1' OR '1'='1",
    "1; DROP TABLE todos; --",
    "../../../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "batch",
    "null",
    "x" * 10_000,
    GOOD_ID * 3,
]


@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=lambda v: repr(v[:40]))
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_hostile_ids_are_400_invalid_id(client: Any, services: Any, bad_id: str, method: str) -> None:
    status, _, payload = prod(
        method,
        "/todos/{todo_id}",
        f"/todos/{bad_id}",
        headers=JSON_HEADERS,
        body=json.dumps(TODO),
        path_params={"todo_id": bad_id},
    )
    assert status == 400, payload
    clean_error(status, payload, "invalid_id")
    assert services.master.query("SELECT COUNT(*) FROM todos")[0][0] == 0


# -- hostile cursors ---------------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


HOSTILE_CURSORS = [
    "not base64 at all!",
    b64(b"\x00\xff\xfe random bytes"),
    b64(b'{"after": "\' OR 1=1 --"}'),
    b64(b"{\"after\": \"0190b2a0-1234-7abc-8def-0123456789ab' OR '1'='1\"}"),
    b64(b'{"after": null}'),
    b64(b'{"after": 1}'),
    b64(b'{"after": ["a"]}'),
    b64(b'{"before": "0190b2a0-1234-7abc-8def-0123456789ab"}'),
    b64(b"[1, 2]"),
    b64(b'"after"'),
    b64(b"1e999"),
    b64(b"NaN"),
    b64(b'{"after": "' + GOOD_ID.upper().encode() + b'"}'),
    "é" * 10,
    "A" * 201,
    "",
]


@pytest.mark.parametrize("cursor", HOSTILE_CURSORS, ids=lambda v: repr(v[:30]))
def test_hostile_cursors_are_400_invalid_query(client: Any, cursor: str) -> None:
    create(client, "alice")
    status, _, payload = prod("GET", "/todos", "/todos", query=f"cursor={cursor}" if cursor else "cursor=")
    assert status == 400, payload
    clean_error(status, payload, "invalid_query")


def test_another_users_id_in_a_cursor_only_positions_the_callers_page(client: Any) -> None:
    alice_ids = sorted(create(client, "alice", {"title": f"a{i}"})["id"] for i in range(3))
    bob_ids = sorted(create(client, "bob", {"title": f"b{i}"})["id"] for i in range(3))
    for after in alice_ids + ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]:
        for extra in ({}, {"owner": "alice"}, {"sub": "alice"}):
            cursor = b64(json.dumps({"after": after, **extra}).encode())
            page = client.http.get(f"/todos?cursor={cursor}&limit=100", headers=auth("bob"))
            assert page.status_code == 200
            assert [t["id"] for t in page.json_body["todos"]] == [i for i in bob_ids if i > after]
    # and alice's own cursor handed to an admin listing bob's todos positions only that listing
    cursor = client.http.get("/todos?limit=1", headers=auth("alice")).json_body["next_cursor"]
    page = client.http.get(f"/users/bob/todos?cursor={cursor}", headers=auth("root", ["admins"]))
    assert [t["id"] for t in page.json_body["todos"]] == [i for i in bob_ids if i > alice_ids[0]]


@pytest.mark.parametrize(
    "query",
    [
        "limit=10;DROP TABLE todos",
        "limit=1e2",
        "limit=0x10",
        "state=open'--",
        "state=OPEN",
        "limit=%EF%BC%91",
        "limit=-0",
        "limit= 5",
    ],
)
def test_hostile_query_values_are_400(client: Any, query: str) -> None:
    err(client.http.get(f"/todos?{query}", headers=auth()), 400, "invalid_query")


# -- bodies: size, nesting, encoding, numbers, duplicate keys ----------------------------------------------
def padded(payload: dict[str, Any], size: int) -> bytes:
    """`payload` as JSON padded with whitespace to exactly `size` bytes."""
    raw = json.dumps(payload).encode()
    assert len(raw) <= size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


WRITES = [
    ("POST", "/todos", {"title": "t"}),
    ("POST", "/todos/batch", {"todos": [{"title": "t"}]}),
    ("PUT", f"/todos/{GOOD_ID}", {"title": "t"}),
    ("PUT", "/me", {"display_name": "d"}),
]


@pytest.mark.parametrize(("method", "path", "payload"), WRITES)
def test_body_at_the_limit_is_accepted_and_one_byte_over_is_413(
    client: Any, method: str, path: str, payload: Any
) -> None:
    at_limit = client.http.request(method, path, headers=auth(), body=padded(payload, LIMIT))
    assert at_limit.status_code == 202, at_limit.body
    err(client.http.request(method, path, headers=auth(), body=padded(payload, LIMIT + 1)), 413, "payload_too_large")


def test_size_is_counted_in_bytes_not_characters(client: Any) -> None:
    notes = "€" * 10_000  # 30,000 bytes in 10,000 characters
    raw = json.dumps({"title": "t", "notes": notes}, ensure_ascii=False).encode()
    over = raw[:-1] + b" " * (LIMIT + 1 - len(raw)) + b"}"
    assert len(over) == LIMIT + 1 and len(over.decode()) < LIMIT
    err(client.http.post("/todos", headers=auth(), body=over), 413, "payload_too_large")


def test_413_comes_before_parsing_and_media_type(client: Any) -> None:
    big_garbage = b"\xff" * (LIMIT + 1)
    err(client.http.post("/todos", headers=auth(), body=big_garbage), 413, "payload_too_large")
    plain = {**auth(json_body=False), "Content-Type": "text/plain"}
    err(client.http.post("/todos", headers=plain, body=big_garbage), 413, "payload_too_large")
    err(client.http.delete(f"/todos/{GOOD_ID}", headers=auth(), body=big_garbage), 413, "payload_too_large")
    nested = b"[" * (LIMIT // 2 + 1) + b"]" * (LIMIT // 2 + 1)
    err(client.http.post("/todos", headers=auth(), body=nested), 413, "payload_too_large")


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"title": "t", "notes": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b'{"todos": [' + b"{" * 5000 + b"}" * 5000 + b"]}",
    ],
    ids=["arrays", "objects", "nested-field", "nested-batch-item"],
)
@pytest.mark.parametrize("path", ["/todos", "/todos/batch", "/me"])
def test_deeply_nested_json_is_400_not_500(client: Any, raw: bytes, path: str) -> None:
    assert len(raw) <= LIMIT
    response = (
        client.http.post(path, headers=auth(), body=raw)
        if path != "/me"
        else client.http.put(path, headers=auth(), body=raw)
    )
    assert response.status_code == 400, response.body
    assert json.loads(response.body)["error"] in ("invalid_json", "validation_error")
    clean_error(400, json.loads(response.body))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "\xff"}',
        b'{"title": "\xc0\xaf"}',  # overlong encoding of "/"
        b'{"title": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        b'{"title": "\xe2\x82"}',  # truncated sequence
        b'{"title": "t"}\xff',
        b"\xfe\xff\x00{",  # UTF-16 BOM
        '{"title": "t"}'.encode("utf-16"),
        '{"title": "é"}'.encode("latin-1"),
    ],
)
def test_invalid_utf8_is_400_invalid_json(client: Any, raw: bytes) -> None:
    err(client.http.post("/todos", headers=auth(), body=raw), 400, "invalid_json")
    status, _, payload = prod("POST", "/todos", "/todos", headers=JSON_HEADERS, body=raw)
    assert status == 400
    clean_error(status, payload, "invalid_json")


def test_json_escaped_lone_surrogates_are_a_validation_error(client: Any) -> None:
    response = client.http.post("/todos", headers=auth(), body=b'{"title": "\\ud800"}')
    assert "title" in err(response, 400, "validation_error")["fields"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "t", "notes": NaN}',
        b'{"title": "t", "notes": Infinity}',
        b'{"title": "t", "notes": -Infinity}',
        b'{"title": NaN}',
        b'{"todos": [{"title": "t", "x": NaN}]}',
        b'{"title": "t", "notes": ' + b"9" * 5000 + b"}",  # beyond Python's int digit limit
    ],
)
def test_nan_infinity_and_huge_numbers_are_400(client: Any, raw: bytes) -> None:
    for path in ("/todos", "/todos/batch"):
        response = client.http.post(path, headers=auth(), body=raw)
        assert response.status_code == 400
        assert clean_error(400, json.loads(response.body))["error"] in ("invalid_json", "validation_error")
    err(client.http.post("/todos", headers=auth(), body=raw), 400, "invalid_json")


def test_overflowing_floats_are_a_validation_error(client: Any) -> None:
    response = client.http.post("/todos", headers=auth(), body=b'{"title": "t", "due_at": 1e999}')
    assert "due_at" in err(response, 400, "validation_error")["fields"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "a", "title": "b"}',
        b'{"title": "a", "notes": "", "notes": "x"}',
        b'{"todos": [{"title": "a", "title": "b"}]}',
        b'{"todos": [], "todos": [{"title": "a"}]}',
        b'{"display_name": "a", "display_name": "b"}',
    ],
)
def test_duplicate_keys_are_400_invalid_json(client: Any, raw: bytes) -> None:
    path = "/me" if b"display_name" in raw else ("/todos/batch" if b"todos" in raw else "/todos")
    method = "PUT" if path == "/me" else "POST"
    err(client.http.request(method, path, headers=auth(), body=raw), 400, "invalid_json")


# -- content types ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "Application/JSON",
        "application/json; charset=utf8",
    ],
)
@pytest.mark.parametrize(("method", "path", "payload"), WRITES)
def test_json_media_types_are_accepted(client: Any, content_type: str, method: str, path: str, payload: Any) -> None:
    headers = {**auth(json_body=False), "Content-Type": content_type}
    response = client.http.request(method, path, headers=headers, body=body(payload))
    assert response.status_code == 202, (content_type, response.body)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/json",
        "application/jsonx",
        "application/json-patch+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/json, text/plain",
        "*/*",
    ],
)
@pytest.mark.parametrize(("method", "path", "payload"), WRITES)
def test_other_media_types_are_415(client: Any, content_type: str | None, method: str, path: str, payload: Any) -> None:
    headers = auth(json_body=False)
    if content_type is not None:
        headers["Content-Type"] = content_type
    err(client.http.request(method, path, headers=headers, body=body(payload)), 415, "unsupported_media_type")


def test_delete_ignores_the_media_type(client: Any) -> None:
    for content_type in ("text/plain", "application/xml", "application/json; charset=latin-1"):
        headers = {**auth(json_body=False), "Content-Type": content_type}
        assert client.http.delete(f"/todos/{GOOD_ID}", headers=headers, body=b"<x/>").status_code == 202


# -- the order of checks with several faults at once ----------------------------------------------------------
OVERSIZED_GARBAGE = b"{\xff" + b" " * LIMIT


@pytest.mark.parametrize(
    ("with_token", "todo_id", "raw", "content_type", "expected"),
    [
        (False, "BAD", OVERSIZED_GARBAGE, "text/plain", (401, "unauthorized")),
        (True, "BAD", OVERSIZED_GARBAGE, "text/plain", (400, "invalid_id")),
        (True, GOOD_ID, OVERSIZED_GARBAGE, "text/plain", (413, "payload_too_large")),
        (True, GOOD_ID, b"{\xff", "text/plain", (415, "unsupported_media_type")),
        (True, GOOD_ID, b"{\xff", None, (415, "unsupported_media_type")),
        (True, GOOD_ID, b"{\xff", "application/json", (400, "invalid_json")),
        (True, GOOD_ID, b'{"title": ""}', "application/json", (400, "validation_error")),
    ],
)
def test_check_order_on_put(
    client: Any, with_token: bool, todo_id: str, raw: bytes, content_type: str | None, expected: tuple[int, str]
) -> None:
    headers = {"Authorization": token("alice")} if with_token else {}
    if content_type:
        headers["Content-Type"] = content_type
    err(client.http.put(f"/todos/{todo_id}", headers=headers, body=raw), *expected)
    # and the same as production's gateway delivers it
    claims = prod_claims("alice") if with_token else None
    status, _, payload = prod(
        "PUT",
        "/todos/{todo_id}",
        f"/todos/{todo_id}",
        sub=None,
        claims=claims,
        headers={"Content-Type": content_type} if content_type else {},
        body=raw,
        path_params={"todo_id": todo_id},
    )
    assert (status, payload["error"]) == expected
    clean_error(status, payload)


@pytest.mark.parametrize("path", ["/todos", "/todos/batch"])
def test_check_order_on_post_with_a_bad_idempotency_key(client: Any, path: str) -> None:
    headers = {**auth(), "Idempotency-Key": "x" * 129}
    err(client.http.post(path, headers=headers, body=OVERSIZED_GARBAGE), 413, "payload_too_large")
    err(
        client.http.post(path, headers={**headers, "Content-Type": "text/plain"}, body=b"{"),
        415,
        "unsupported_media_type",
    )
    err(client.http.post(path, headers=headers, body=b"{"), 400, "invalid_json")
    fields = err(client.http.post(path, headers=headers, body=b'{"nope": 1}'), 400, "validation_error")["fields"]
    assert "Idempotency-Key" in fields and len(fields) >= 2


def test_check_order_on_delete(client: Any) -> None:
    err(client.http.delete("/todos/BAD", body=OVERSIZED_GARBAGE), 401, "unauthorized")
    err(client.http.delete("/todos/BAD", headers=auth(), body=OVERSIZED_GARBAGE), 400, "invalid_id")
    err(client.http.delete(f"/todos/{GOOD_ID}", headers=auth(), body=OVERSIZED_GARBAGE), 413, "payload_too_large")


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("k", True),
        ("x" * 128, True),
        ("~!@#$%^&*()_+{}|:<>? ok", True),
        ("x" * 129, False),
        ("", False),
        ("tab\there", False),
        ("del\x7f", False),
        ("caf\u00e9", False),
    ],
)
def test_idempotency_key_limits(client: Any, key: str, accepted: bool) -> None:
    from chalicelib.http import IDEMPOTENCY_KEY_MAX

    assert IDEMPOTENCY_KEY_MAX == 128
    response = client.http.post("/todos", headers={**auth(), "Idempotency-Key": key}, body=body(TODO))
    if accepted:
        assert response.status_code == 202
    else:
        assert "Idempotency-Key" in err(response, 400, "validation_error")["fields"]


# -- claims as production sends them ------------------------------------------------------------------------
def test_the_whole_flow_with_production_claims(client: Any) -> None:
    status, headers, accepted = prod("POST", "/todos", "/todos", headers=JSON_HEADERS, body=json.dumps(TODO))
    assert status == 202 and headers["Location"] == f"/todos/{accepted['id']}"
    todo_id = accepted["id"]
    status, headers, read = prod("GET", "/todos/{todo_id}", f"/todos/{todo_id}", path_params={"todo_id": todo_id})
    assert status == 200 and read["title"] == TODO["title"] and headers["ETag"] == f'"{read["version"]}"'
    status, _, _ = prod("GET", "/todos/{todo_id}", f"/todos/{todo_id}", sub="bob", path_params={"todo_id": todo_id})
    assert status == 404
    status, _, page = prod("GET", "/todos", "/todos", query="limit=1&state=open&sub=bob")
    assert status == 200 and [t["id"] for t in page["todos"]] == [todo_id]
    status, _, _ = prod("PUT", "/me", "/me", headers=JSON_HEADERS, body=json.dumps({"display_name": "A"}))
    assert status == 202
    status, _, profile = prod("GET", "/me", "/me")
    assert status == 200 and profile["display_name"] == "A"
    # the test client's typed claims and production's string claims name the same caller
    assert client.http.get(f"/todos/{todo_id}", headers=auth("alice")).json_body == read


# -- errors never leak --------------------------------------------------------------------------------------
class Exploding:
    """A reader or writer failing with driver-like errors whose text must never reach a client."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.exc

        return fail


INTERNAL = (
    "pymysql.err.ProgrammingError: (1064, \"You have an error in your SQL syntax near 'SELECT id FROM todos "
    "WHERE owner = 'alice''\") at /var/task/chalicelib/readers/sql.py line 3; sqlite3 Traceback"
)


def test_unexpected_read_failures_are_a_bare_500(client: Any, services: Any) -> None:
    services.service.reader = Exploding(RuntimeError(INTERNAL))
    for path in ["/todos", f"/todos/{GOOD_ID}", "/me", "/users/alice/todos"]:
        headers = auth("root", ["admins"])
        err(client.http.get(path, headers=headers), 500, "internal_error")


def test_database_failures_are_503_without_detail(client: Any, services: Any) -> None:
    from chalicelib.errors import DatabaseUnavailable

    services.service.reader = Exploding(
        DatabaseUnavailable("cannot connect to mysql://root:pw@10.0.0.5:3306: " + INTERNAL)
    )
    response = client.http.get("/todos", headers=auth())
    err(response, 503, "unavailable")
    assert int(response.headers["Retry-After"]) > 0


def test_unexpected_write_failures_are_a_bare_500_and_transport_failures_503(client: Any, services: Any) -> None:
    from chalicelib.errors import TransportUnavailable

    services.service.writer = Exploding(RuntimeError(INTERNAL))
    for method, path, payload in WRITES:
        response = client.http.request(method, path, headers=auth(), body=body(payload))
        err(response, 500, "internal_error")
    services.service.writer = Exploding(TransportUnavailable("firehose PutRecordBatch: " + INTERNAL))
    for method, path, payload in WRITES:
        response = client.http.request(method, path, headers=auth(), body=body(payload))
        err(response, 503, "unavailable")
        assert int(response.headers["Retry-After"]) > 0
    assert services.master.query("SELECT COUNT(*) FROM todos")[0][0] == 0


def test_framework_answers_have_the_contract_shape(client: Any) -> None:
    # a method the path does not have is an unknown path to API Gateway (localdev emulates it)
    err(client.http.request("PATCH", f"/todos/{GOOD_ID}", headers=auth(), body=b"{}"), 404, "not_found")
    err(client.http.get("/nope", headers=auth()), 404, "not_found")
    err(client.http.get("/todos", headers={"Authorization": "Bearer \x00garbage"}), 401, "unauthorized")


# -- the access log never carries the token or the body -------------------------------------------------------
def test_access_log_never_carries_token_body_or_query(
    client: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLUICE_LOG", "1")
    secret_token = token("sub-d41d8cd9")
    secret = "title-7b3f9c2e"
    headers = {"Authorization": secret_token, "Content-Type": "application/json"}
    capsys.readouterr()
    done = client.http.post("/todos", headers=headers, body=body({"title": secret})).json_body
    client.http.get(f"/todos/{done['id']}?cursor=q-5e6f", headers=headers)
    client.http.put("/me", headers=headers, body=body({"display_name": secret, "nope": 1}))
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["status"] for r in records if r.get("type") == "request"] == [202, 200, 400]
    for needle in (secret_token, secret_token.split(".")[1], secret, "sub-d41d8cd9", "q-5e6f", done["id"]):
        assert needle not in out
