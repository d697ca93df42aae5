"""The HTTP API of CONTRACT section 3 through chalice's test client, on the embedded defaults
(local transport writing Firehose-layout objects, loaded at once into SQLite)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import auth, body

TODO = {
    "title": "buy milk",
    "notes": "2 litres",
    "state": "open",
    "tags": ["home"],
    "due_at": "2030-01-01T10:00:00+01:00",
}


def create(client, sub="alice", payload=None, headers=None):  # type: ignore[no-untyped-def]
    response = client.http.post("/todos", headers={**auth(sub), **(headers or {})}, body=body(payload or TODO))
    assert response.status_code == 202, response.body
    return response


def error_of(response):  # type: ignore[no-untyped-def]
    data = json.loads(response.body)
    assert set(data) <= {"error", "message", "fields"} and isinstance(data["message"], str)
    return data


# -- health and the happy path ----------------------------------------------------------------
def test_health_needs_no_token(client):
    response = client.http.get("/health")
    assert response.status_code == 200 and response.json_body == {"status": "ok"}


def test_create_then_read_the_todo_as_written(client):
    created = create(client)
    answer = created.json_body
    assert answer["status"] == "accepted"
    assert created.headers["Location"] == f"/todos/{answer['id']}"
    assert uuid.UUID(answer["id"]).version == 7
    got = client.http.get(f"/todos/{answer['id']}", headers=auth())
    assert got.status_code == 200
    todo = got.json_body
    assert set(todo) == {
        "id",
        "title",
        "notes",
        "state",
        "tags",
        "due_at",
        "priority",
        "list_id",
        "version",
        "created_at",
        "updated_at",
    }
    assert todo["title"] == "buy milk" and todo["tags"] == ["home"]
    assert (todo["priority"], todo["list_id"]) == (3, None)  # the defaults
    assert todo["due_at"] == "2030-01-01T09:00:00Z"
    assert todo["version"] == answer["version"]
    assert todo["created_at"].endswith("Z") and todo["created_at"] == todo["updated_at"]
    assert got.headers["ETag"] == f'"{answer["version"]}"'
    assert got.headers["Cache-Control"] == "private, max-age=0"


def test_put_replaces_fully_and_creates_when_absent(client):
    todo_id = str(uuid.uuid4())
    first = client.http.put(f"/todos/{todo_id}", headers=auth(), body=body({"title": "new", "tags": ["a"]}))
    assert first.status_code == 202 and first.headers["Location"] == f"/todos/{todo_id}"
    second = client.http.put(f"/todos/{todo_id}", headers=auth(), body=body({"title": "replaced"}))
    assert second.json_body["version"] > first.json_body["version"]
    todo = client.http.get(f"/todos/{todo_id}", headers=auth()).json_body
    assert todo["title"] == "replaced" and todo["tags"] == [] and todo["version"] == second.json_body["version"]


def test_delete_then_read_is_404_and_a_later_put_brings_it_back(client):
    todo_id = create(client).json_body["id"]
    deleted = client.http.delete(f"/todos/{todo_id}", headers=auth(json_body=False))
    assert deleted.status_code == 202 and deleted.json_body["id"] == todo_id
    assert client.http.get(f"/todos/{todo_id}", headers=auth()).status_code == 404
    client.http.put(f"/todos/{todo_id}", headers=auth(), body=body({"title": "again"}))
    assert client.http.get(f"/todos/{todo_id}", headers=auth()).json_body["title"] == "again"


def test_delete_of_an_absent_todo_is_accepted(client):
    assert client.http.delete(f"/todos/{uuid.uuid4()}", headers=auth(json_body=False)).status_code == 202


def test_etag_if_none_match(client):
    todo_id = create(client).json_body["id"]
    etag = client.http.get(f"/todos/{todo_id}", headers=auth()).headers["ETag"]
    for header in (etag, f"W/{etag}", f'"1", {etag}', "*"):
        again = client.http.get(f"/todos/{todo_id}", headers={**auth(), "If-None-Match": header})
        assert again.status_code == 304 and again.body == b"" and again.headers["ETag"] == etag
    assert client.http.get(f"/todos/{todo_id}", headers={**auth(), "If-None-Match": '"1"'}).status_code == 200


def test_versions_strictly_increase(client):
    versions = [create(client).json_body["version"] for _ in range(20)]
    assert versions == sorted(set(versions))
    assert all(0 < v < 2**53 for v in versions)


# -- identity and isolation -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/todos"),
        ("POST", "/todos"),
        ("POST", "/todos/batch"),
        ("GET", f"/todos/{uuid.uuid4()}"),
        ("PUT", f"/todos/{uuid.uuid4()}"),
        ("DELETE", f"/todos/{uuid.uuid4()}"),
        ("GET", "/me"),
        ("PUT", "/me"),
        ("GET", "/users/alice/todos"),
    ],
)
def test_every_route_but_health_is_401_without_a_sub(client, method, path):
    response = client.http.request(method, path, headers={"Content-Type": "application/json"}, body=b"{}")
    assert response.status_code == 401 and error_of(response)["error"] == "unauthorized"


def test_a_token_without_sub_is_401(client):
    from chalicelib.cli import b64_json

    no_sub = f"{b64_json({'alg': 'none'})}.{b64_json({'cognito:username': 'x'})}."
    assert client.http.get("/todos", headers={"Authorization": no_sub}).status_code == 401


def test_a_token_that_is_not_a_jwt_is_401(client):
    for bad in ("garbage", "a.b.c", "Bearer", "x.!!!.y"):
        response = client.http.get("/todos", headers={"Authorization": bad})
        assert response.status_code == 401, bad


def test_another_users_todo_is_404_and_untouched_by_their_writes(client):
    todo_id = create(client, "alice").json_body["id"]
    assert client.http.get(f"/todos/{todo_id}", headers=auth("bob")).status_code == 404
    client.http.put(f"/todos/{todo_id}", headers=auth("bob"), body=body({"title": "bob's"}))
    client.http.delete(f"/todos/{todo_id}", headers=auth("bob", json_body=False))
    alice = client.http.get(f"/todos/{todo_id}", headers=auth("alice")).json_body
    assert alice["title"] == "buy milk"
    bobs = client.http.get("/todos", headers=auth("bob")).json_body["todos"]
    assert bobs == []  # bob's PUT then DELETE acted on bob's own (owner, id)
    assert [t["id"] for t in client.http.get("/todos", headers=auth("alice")).json_body["todos"]] == [todo_id]


def test_identity_comes_only_from_the_claims(client):
    create(client, "alice")
    sneaky = {**auth("bob"), "X-User": "alice", "sub": "alice"}
    assert client.http.get("/todos?sub=alice&owner=alice", headers=sneaky).json_body["todos"] == []


def test_admins_read_any_users_todos_others_get_403(client):
    todo_id = create(client, "alice").json_body["id"]
    assert client.http.get("/users/alice/todos", headers=auth("bob")).status_code == 403
    assert client.http.get("/users/alice/todos", headers=auth("bob", ["admins2"])).status_code == 403
    listed = client.http.get("/users/alice/todos", headers=auth("root", ["readers", "admins"]))
    assert listed.status_code == 200 and [t["id"] for t in listed.json_body["todos"]] == [todo_id]
    assert listed.headers["Cache-Control"].startswith("private")


def test_admins_cannot_write_through_the_admin_route(client):
    # the path has no POST: API Gateway answers it as an unknown path (emulated by localdev)
    response = client.http.post("/users/alice/todos", headers=auth("root", ["admins"]), body=body(TODO))
    assert response.status_code == 404 and error_of(response)["error"] == "not_found"


# -- profile ---------------------------------------------------------------------------------------
def test_profile_is_404_until_the_first_put(client):
    assert client.http.get("/me", headers=auth()).status_code == 404
    put = client.http.put("/me", headers=auth(), body=body({"display_name": "Alice", "timezone": "Europe/Lisbon"}))
    assert put.status_code == 202 and put.headers["Location"] == "/me" and put.json_body["id"] == "alice"
    me = client.http.get("/me", headers=auth()).json_body
    assert me["display_name"] == "Alice" and me["locale"] == "en" and me["timezone"] == "Europe/Lisbon"
    assert me["version"] == put.json_body["version"]
    assert set(me) == {"display_name", "locale", "timezone", "version", "created_at", "updated_at"}
    assert client.http.get("/me", headers=auth("bob")).status_code == 404


def test_profile_validation(client):
    response = client.http.put("/me", headers=auth(), body=body({"display_name": "", "timezone": "Nowhere"}))
    assert response.status_code == 400
    assert set(error_of(response)["fields"]) == {"display_name", "timezone"}


# -- listing and pagination --------------------------------------------------------------------------
def test_pagination_covers_everything_once_in_id_order(client):
    ids = sorted(
        client.http.put(f"/todos/{uuid.uuid4()}", headers=auth(), body=body({"title": f"t{i}"})).json_body["id"]
        for i in range(23)
    )
    seen, cursor, pages = [], None, 0
    while True:
        query = "/todos?limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = client.http.get(query, headers=auth()).json_body
        seen += [t["id"] for t in page["todos"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 5


def test_exact_page_boundary_has_no_empty_trailing_page(client):
    for i in range(4):
        create(client, payload={"title": f"t{i}"})
    first = client.http.get("/todos?limit=2", headers=auth()).json_body
    second = client.http.get(f"/todos?limit=2&cursor={first['next_cursor']}", headers=auth()).json_body
    assert len(second["todos"]) == 2 and second["next_cursor"] is None


def test_default_limit_is_50_and_state_filters(client):
    client.http.post("/todos/batch", headers=auth(), body=body({"todos": [{"title": f"t{i}"} for i in range(60)]}))
    create(client, payload={"title": "finished", "state": "done"})
    page = client.http.get("/todos", headers=auth()).json_body
    assert len(page["todos"]) == 50 and page["next_cursor"]
    done = client.http.get("/todos?state=done", headers=auth()).json_body
    assert [t["title"] for t in done["todos"]] == ["finished"] and done["next_cursor"] is None
    assert len(client.http.get("/todos?state=open&limit=100", headers=auth()).json_body["todos"]) == 60


def test_deleted_todos_are_not_listed(client):
    keep = create(client).json_body["id"]
    gone = create(client).json_body["id"]
    client.http.delete(f"/todos/{gone}", headers=auth(json_body=False))
    assert [t["id"] for t in client.http.get("/todos", headers=auth()).json_body["todos"]] == [keep]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=%EF%BC%95",
        "state=closed",
        "state=",
        "cursor=nope",
        "cursor=",
        "cursor=eyJhZnRlciI6ICJ4In0",
        "limit=5&limit=6",
    ],
)
def test_bad_queries_are_400_invalid_query(client, query):
    response = client.http.get(f"/todos?{query}", headers=auth())
    assert response.status_code == 400 and error_of(response)["error"] == "invalid_query", query


def test_unknown_query_parameters_are_ignored(client):
    assert client.http.get("/todos?colour=blue&limit=3", headers=auth()).status_code == 200


# -- errors and their order ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad_id",
    [
        "0190B2A0-0000-7000-8000-000000000000",
        "0190b2a0000070008000000000000000",
        "not-a-uuid",
        "1",
        "0190b2a0-0000-7000-8000-00000000000",
        "%27%20OR%201%3D1",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_malformed_ids_are_400_invalid_id(client, bad_id, method):
    response = client.http.request(method, f"/todos/{bad_id}", headers=auth(), body=body(TODO))
    assert response.status_code == 400 and error_of(response)["error"] == "invalid_id"


def test_check_order_401_invalid_id_413_415_invalid_json_validation(client):
    big = b"{" + b" " * 70000 + b"}"
    # no identity beats everything
    assert client.http.put("/todos/BAD", headers={"Content-Type": "text/plain"}, body=big).status_code == 401
    # then the id
    assert error_of(client.http.put("/todos/BAD", headers=auth(), body=big))["error"] == "invalid_id"
    # then the size, before the media type
    plain = {**auth(json_body=False), "Content-Type": "text/plain"}
    response = client.http.put(f"/todos/{uuid.uuid4()}", headers=plain, body=big)
    assert response.status_code == 413 and error_of(response)["error"] == "payload_too_large"
    # then the media type, before parsing
    response = client.http.post("/todos", headers=plain, body=b"{not json")
    assert response.status_code == 415 and error_of(response)["error"] == "unsupported_media_type"
    # then JSON, before validation
    assert error_of(client.http.post("/todos", headers=auth(), body=b"{not json"))["error"] == "invalid_json"
    response = client.http.post("/todos", headers=auth(), body=body({"title": ""}))
    assert error_of(response) == {
        "error": "validation_error",
        "message": error_of(response)["message"],
        "fields": {"title": ["is required"]},
    }


def test_body_exactly_at_the_limit_is_read_and_one_byte_more_is_413(client):
    payload = {"title": "t", "notes": ""}
    base = len(json.dumps(payload).encode())
    at_limit = json.dumps({"title": "t", "notes": ""}).replace('"notes": ""', '"notes": ""' + " " * (65536 - base))
    assert len(at_limit.encode()) == 65536
    assert client.http.post("/todos", headers=auth(), body=at_limit).status_code == 202
    assert client.http.post("/todos", headers=auth(), body=at_limit + " ").status_code == 413


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/xml", "application/json-patch+json", "application/json; charset=latin-1"],
)
def test_writes_need_json(client, content_type):
    headers = auth(json_body=False)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.http.post("/todos", headers=headers, body=body(TODO))
    assert response.status_code == 415 and error_of(response)["error"] == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON; charset=UTF-8"])
def test_json_with_parameters_is_fine(client, content_type):
    headers = {**auth(json_body=False), "Content-Type": content_type}
    assert client.http.post("/todos", headers=headers, body=body(TODO)).status_code == 202


def test_delete_ignores_the_content_type(client):
    headers = {**auth(json_body=False), "Content-Type": "text/plain"}
    assert client.http.delete(f"/todos/{uuid.uuid4()}", headers=headers, body=b"whatever").status_code == 202


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[",
        b"\xff\xfe",
        b'{"title": NaN}',
        b'{"title": "a", "title": "b"}',
        b"[" * 30000 + b"]" * 30000,
        b"\xef\xbb\xbf{}",
    ],
)
def test_unparseable_bodies_are_invalid_json(client, raw):
    response = client.http.post("/todos", headers=auth(), body=raw)
    assert response.status_code == 400 and error_of(response)["error"] == "invalid_json"


def test_framework_errors_have_the_contract_shape(client):
    response = client.http.patch("/todos", headers=auth(), body=b"{}")
    assert response.status_code == 404 and error_of(response)["error"] == "not_found"
    response = client.http.get("/nowhere", headers=auth())
    assert response.status_code == 404 and error_of(response)["error"] == "not_found"


def test_validation_error_lists_every_field(client):
    bad = {"title": "", "state": "later", "tags": ["Nope"], "due_at": "soon", "colour": "red"}
    fields = error_of(client.http.post("/todos", headers=auth(), body=body(bad)))["fields"]
    assert set(fields) == {"title", "state", "tags", "due_at", "colour"}
    assert all(isinstance(m, list) and m and all(isinstance(x, str) for x in m) for m in fields.values())


# -- idempotency keys and batches ------------------------------------------------------------------------
def test_idempotency_key_names_the_same_todo_and_makes_a_new_version(client):
    first = create(client, headers={"Idempotency-Key": "order-42"}).json_body
    again = create(client, payload={"title": "retried"}, headers={"Idempotency-Key": "order-42"}).json_body
    assert first["id"] == again["id"] and again["version"] > first["version"]
    assert client.http.get(f"/todos/{first['id']}", headers=auth()).json_body["title"] == "retried"
    other_user = create(client, "bob", headers={"Idempotency-Key": "order-42"}).json_body
    assert other_user["id"] != first["id"]
    assert len(client.http.get("/todos", headers=auth()).json_body["todos"]) == 1


@pytest.mark.parametrize("key", ["", "x" * 129, "tab\there", "é"])
def test_bad_idempotency_keys(client, key):
    response = client.http.post("/todos", headers={**auth(), "Idempotency-Key": key}, body=body(TODO))
    assert response.status_code == 400
    assert "Idempotency-Key" in error_of(response)["fields"]


def test_idempotency_key_edges_are_accepted(client):
    for key in ("x", "~" * 128, " a b "):
        create(client, headers={"Idempotency-Key": key})


def test_batch_creates_all_and_answers_ids_and_versions(client):
    response = client.http.post("/todos/batch", headers=auth(), body=body({"todos": [{"title": "a"}, {"title": "b"}]}))
    assert response.status_code == 202 and "Location" not in response.headers
    accepted = response.json_body["accepted"]
    assert [set(a) for a in accepted] == [{"id", "version"}] * 2
    assert accepted[0]["version"] < accepted[1]["version"]
    titles = {client.http.get(f"/todos/{a['id']}", headers=auth()).json_body["title"] for a in accepted}
    assert titles == {"a", "b"}


def test_batch_is_validated_as_a_whole(client):
    response = client.http.post("/todos/batch", headers=auth(), body=body({"todos": [{"title": "fine"}, {"title": 3}]}))
    assert response.status_code == 400 and set(error_of(response)["fields"]) == {"todos.1.title"}
    assert client.http.get("/todos", headers=auth()).json_body["todos"] == []


def test_batch_idempotency_key_derives_an_id_per_position(client):
    payload = body({"todos": [{"title": "a"}, {"title": "b"}]})
    first = client.http.post("/todos/batch", headers={**auth(), "Idempotency-Key": "k"}, body=payload).json_body
    again = client.http.post("/todos/batch", headers={**auth(), "Idempotency-Key": "k"}, body=payload).json_body
    assert [a["id"] for a in first["accepted"]] == [a["id"] for a in again["accepted"]]
    assert first["accepted"][0]["id"] != first["accepted"][1]["id"]
    assert len(client.http.get("/todos", headers=auth()).json_body["todos"]) == 2


@pytest.mark.parametrize("size", [0, 101])
def test_batch_size_limits(client, size):
    response = client.http.post("/todos/batch", headers=auth(), body=body({"todos": [{"title": "t"}] * size}))
    assert response.status_code == 400 and "todos" in error_of(response)["fields"]


# -- the write transport ------------------------------------------------------------------------------
def test_each_write_lands_as_a_firehose_layout_object(client, local_dir):
    answer = create(client).json_body
    objects = [p for p in local_dir.rglob("*") if p.is_file() and p.suffix != ".sqlite3" and "sqlite" not in p.name]
    assert len(objects) == 1
    rel = objects[0].relative_to(local_dir).parts
    assert rel[0] == "writes" and len(rel) == 6 and [len(p) for p in rel[1:5]] == [4, 2, 2, 2]
    command = json.loads(objects[0].read_bytes())
    assert command["id"] == answer["id"] and command["version"] == answer["version"]
    assert command["owner"] == "alice" and command["op"] == "put" and command["resource"] == "todos"


def test_writes_are_accepted_when_the_database_is_down_and_replay_loads_them(client, services, local_dir):
    from chalicelib.errors import DatabaseUnavailable

    def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise DatabaseUnavailable("simulated outage")

    real = services.loader.load
    services.loader.load = down
    try:
        answer = create(client).json_body
    finally:
        services.loader.load = real
    assert client.http.get(f"/todos/{answer['id']}", headers=auth()).status_code == 404
    from chalicelib.loader.reconciler import reconcile
    from chalicelib.loader.sources import LocalObjectStore

    report = reconcile(LocalObjectStore(str(local_dir)), services.loader, ["writes/"])
    assert report.result.applied == 1
    assert client.http.get(f"/todos/{answer['id']}", headers=auth()).json_body["version"] == answer["version"]


def test_transport_failure_is_503_with_retry_after_and_nothing_written(client, services, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the transport wants a folder")
    services.writer.root = str(blocker)
    response = client.http.post("/todos", headers=auth(), body=body(TODO))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert error_of(response)["error"] == "unavailable"
    services.writer.root = str(tmp_path / "fresh")
    assert client.http.get("/todos", headers=auth()).json_body["todos"] == []


def test_database_down_on_read_is_503_with_retry_after(client, services):
    from chalicelib.errors import DatabaseUnavailable

    class Down:
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            def fail(*a, **k):  # type: ignore[no-untyped-def]
                raise DatabaseUnavailable("no server")

            return fail

    services.service.reader = Down()
    response = client.http.get(f"/todos/{uuid.uuid4()}", headers=auth())
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert error_of(response)["error"] == "unavailable"
