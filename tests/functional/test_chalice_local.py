"""`chalice local` as a user runs it (`make run`), driven over real HTTP: the README's curl
session pasted as is, and the edges API Gateway emulation owns (bad tokens, unknown paths)."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, token
from tests.localserver import chalice_local


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chalice_local(tmp_path_factory.mktemp("chalice-local")) as (base, log_path):
        yield base
    assert "Traceback" not in log_path.read_text(errors="replace"), "the server logged a traceback"


def request(base: str, method: str, path: str, headers: dict[str, str] | None = None, data: bytes | None = None):  # type: ignore[no-untyped-def]
    req = urllib.request.Request(base + path, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def readme_session() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- curl-session -->\s*```bash\n(.*?)```\s*<!-- /curl-session -->", text, re.S)
    assert match, "the README has no curl session between its markers"
    return match.group(1)


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("jq") is None, reason="needs curl and jq")
def test_the_readme_curl_session_works_as_pasted(server):
    script = readme_session().replace("http://127.0.0.1:8000", server)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    todo_id = re.search(r"created ([0-9a-f-]{36})", out)
    assert todo_id, out
    assert "HTTP/1.1 200" in out and f'"id":"{todo_id.group(1)}"' in out.replace(" ", "")
    assert '"title": "Buy oat milk"' in out and '"state": "done"' in out
    assert '"name": "Groceries"' in out and '"position": 0' in out  # the list call
    assert '"priority":1' in out.replace(" ", "") and '"list_id":null' not in out.replace(" ", "")
    assert out.rstrip().splitlines()[-1] == "404"


def test_every_kind_of_error_over_http_has_the_contract_shape(server):
    bearer = {"Authorization": token("alice")}
    cases = [
        ("GET", "/todos", {"Authorization": "not-a-jwt"}, None, 401, "unauthorized"),
        ("GET", "/todos", {}, None, 401, "unauthorized"),
        ("GET", "/nowhere", bearer, None, 404, "not_found"),
        ("PATCH", "/todos", bearer, b"{}", 404, "not_found"),
        ("GET", "/todos/NOT-AN-ID", bearer, None, 400, "invalid_id"),
        ("POST", "/todos", {**bearer, "Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
        ("POST", "/todos", {**bearer, "Content-Type": "application/json"}, b"\xff", 400, "invalid_json"),
        ("POST", "/todos", {**bearer, "Content-Type": "application/json"}, b" " * 70000, 413, "payload_too_large"),
        ("GET", "/todos?limit=0", bearer, None, 400, "invalid_query"),
    ]
    for method, path, headers, data, status, code in cases:
        got, _, raw = request(server, method, path, headers, data)
        assert got == status, (method, path, got, raw)
        answer = json.loads(raw)
        assert answer["error"] == code and isinstance(answer["message"], str), (path, answer)


def test_write_then_read_at_once_over_http(server):
    headers = {"Authorization": token("carol"), "Content-Type": "application/json"}
    status, head, raw = request(server, "POST", "/todos", headers, json.dumps({"title": "x"}).encode())
    assert status == 202
    todo_id = json.loads(raw)["id"]
    assert head["Location"] == f"/todos/{todo_id}"
    status, head, raw = request(server, "GET", f"/todos/{todo_id}", headers)
    assert status == 200 and json.loads(raw)["title"] == "x" and head["ETag"].startswith('"')
    assert request(server, "GET", f"/todos/{todo_id}", {**headers, "If-None-Match": head["ETag"]})[0] == 304


def raw(base: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One request as curl sends it, any method name, over a fresh connection."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "PATCH", "TRACE", "PROPFIND", "FOO"])
@pytest.mark.parametrize("path", ["/todos", "/todos/00000000-0000-4000-8000-000000000000", "/me", "/health"])
@pytest.mark.parametrize("with_token", [False, True])
def test_a_method_a_path_does_not_have_is_404_not_found_in_json_as_in_production(server, method, path, with_token):
    # API Gateway answers a method a resource lacks as an unknown path ("Missing Authentication
    # Token"), which the deployed gateway response turns into 404 not_found, token or not.
    headers = {"Authorization": token("alice")} if with_token else {}
    status, head, body = raw(server, method, path, headers)
    assert status == 404, (method, path, status, body[:200])
    assert head["content-type"] == "application/json"
    if method != "HEAD":  # a HEAD answer has no body
        assert json.loads(body) == {"error": "not_found", "message": "No such path."}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "%%", ""]
)
def test_gets_over_http_ignore_the_content_type(server, content_type):
    bearer = {"Authorization": token("dave")}
    for path, want in (("/health", 200), ("/todos", 200), ("/me", 404), ("/todos/NOT-AN-ID", 400)):
        plain = raw(server, "GET", path, bearer)
        typed = raw(server, "GET", path, {**bearer, "Content-Type": content_type})
        assert plain[0] == typed[0] == want, (path, content_type, typed)
        assert json.loads(plain[2]) == json.loads(typed[2])
    assert raw(server, "GET", "/todos", {"Content-Type": content_type})[0] == 401


def test_a_head_answer_has_no_body_so_the_connection_can_go_on(server):
    # A body after a HEAD answer would be read as the start of the next answer on the connection:
    # send HEAD and then GET on one connection, and read both answers to the end.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"HEAD /todos HTTP/1.1\r\nHost: local\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ") and b"Content-Type: application/json" in head
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:80]
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"status": "ok"}
