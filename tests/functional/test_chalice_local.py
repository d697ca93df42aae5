"""`chalice local` as a user runs it (`make run`), driven over real HTTP: the README's curl
session pasted as is, and the edges API Gateway emulation owns (bad tokens, unknown paths)."""

from __future__ import annotations

import json
import re
import shutil
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
    assert out.rstrip().splitlines()[-1] == "404"


def test_every_kind_of_error_over_http_has_the_contract_shape(server):
    bearer = {"Authorization": token("alice")}
    cases = [
        ("GET", "/todos", {"Authorization": "not-a-jwt"}, None, 401, "unauthorized"),
        ("GET", "/todos", {}, None, 401, "unauthorized"),
        ("GET", "/nowhere", bearer, None, 404, "not_found"),
        ("PATCH", "/todos", bearer, b"{}", 405, "method_not_allowed"),
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
