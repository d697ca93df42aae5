"""min_version without a cache (CONTRACT section 3): the embedded defaults (local transport, which
loads before it answers, and SQLite), so every accepted write is already in the database."""

from __future__ import annotations

import time

import pytest

from tests.conftest import auth, body

TODO = "0b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"


def now_us() -> int:
    return time.time_ns() // 1000


def test_reads_answer_at_least_min_version_or_503(client):
    put = client.http.put(f"/todos/{TODO}", headers=auth(), body=body({"title": "t"})).json_body
    got = client.http.get(f"/todos/{TODO}?min_version={put['version']}", headers=auth())
    assert got.status_code == 200 and got.json_body["version"] == put["version"]
    later = client.http.get(f"/todos/{TODO}?min_version={put['version'] + 1}", headers=auth())
    assert later.status_code == 503 and later.headers["Retry-After"] and later.json_body["error"] == "unavailable"
    never = "1b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
    assert client.http.get(f"/todos/{never}?min_version=1", headers=auth()).status_code == 503
    assert client.http.get(f"/todos/{never}", headers=auth()).status_code == 404

    gone = client.http.delete(f"/todos/{TODO}", headers=auth(json_body=False)).json_body["version"]
    for version in (put["version"], gone):  # deleted at V or later: the tombstone's version tells
        assert client.http.get(f"/todos/{TODO}?min_version={version}", headers=auth()).status_code == 404
    assert client.http.get(f"/todos/{TODO}?min_version={gone + 1}", headers=auth()).status_code == 503

    me = client.http.put("/me", headers=auth(), body=body({"display_name": "A"})).json_body["version"]
    assert client.http.get(f"/me?min_version={me}", headers=auth()).json_body["version"] == me
    assert client.http.get(f"/me?min_version={me + 1}", headers=auth()).status_code == 503


def test_every_write_route_gives_a_version_above_min_version(client):
    ahead = now_us() + 4_000_000
    q = f"?min_version={ahead}"
    answers = [
        client.http.post("/todos" + q, headers=auth(), body=body({"title": "a"})),
        client.http.post("/todos/batch" + q, headers=auth(), body=body({"todos": [{"title": "b"}]})),
        client.http.put(f"/todos/{TODO}{q}", headers=auth(), body=body({"title": "c"})),
        client.http.delete(f"/todos/{TODO}{q}", headers=auth(json_body=False)),
        client.http.put("/me" + q, headers=auth(), body=body({"display_name": "d"})),
    ]
    versions = [a.json_body.get("version") or a.json_body["accepted"][0]["version"] for a in answers]
    assert [a.status_code for a in answers] == [202] * 5
    assert all(v > ahead for v in versions)
    plain = client.http.post("/todos", headers=auth(), body=body({"title": "e"})).json_body["version"]
    assert plain < ahead  # the clock other writes use did not move


@pytest.mark.parametrize("raw", ["0", "-3", "abc", "1.5", "%EF%BC%91", str(2**53), "1&min_version=2"])
@pytest.mark.parametrize("path", ["/todos", f"/todos/{TODO}", "/me"])
def test_a_bad_min_version_is_invalid_query_on_reads(client, raw, path):
    response = client.http.get(f"{path}?min_version={raw}", headers=auth())
    assert response.status_code == 400 and response.json_body["error"] == "invalid_query"


def test_min_version_too_far_ahead_is_invalid_query_and_checked_right_after_invalid_id(client):
    ahead = now_us() + 60_000_000
    assert client.http.get(f"/todos/{TODO}?min_version={ahead}", headers=auth()).json_body["error"] == "invalid_query"
    # 401 first, then invalid_id, then min_version, then 413, 415, invalid_json, validation_error
    assert client.http.get(f"/todos/{TODO}?min_version=x").status_code == 401
    assert client.http.get("/todos/BAD?min_version=x", headers=auth()).json_body["error"] == "invalid_id"
    big = "x" * 70000
    q = "?min_version=0"
    no_type = auth(json_body=False)
    for response in (
        client.http.put(f"/todos/{TODO}{q}", headers=no_type, body=big),
        client.http.post(f"/todos{q}", headers=no_type, body=big),
        client.http.post(f"/todos/batch{q}", headers=auth(), body="{"),
        client.http.delete(f"/todos/{TODO}{q}", headers=no_type, body=big),
        client.http.put(f"/me{q}", headers=auth(), body=body({})),
    ):
        assert response.status_code == 400 and response.json_body["error"] == "invalid_query"
    assert client.http.put(f"/todos/BAD{q}", headers=auth(), body=big).json_body["error"] == "invalid_id"


def test_the_admin_route_ignores_min_version_as_an_unknown_parameter(client):
    answer = client.http.get("/users/alice/todos?min_version=abc", headers=auth("root", ["admins"]))
    assert answer.status_code == 200
