"""API fuzzing with schemathesis against `chalice local`, over real HTTP (CONTRACT section 3).

The server runs as `make run` runs it, on a free port with a temporary LOCAL_DATA_DIR (local
transport, embedded SQLite). The document is loaded from the running server's GET /openapi.json,
so what is checked is what clients get. For every operation:

- with a valid development token, schema-valid (positive) and schema-violating (negative) requests:
  no 5xx, the status code is documented, and the body, content type and documented headers
  conform to the document;
- without a token and with garbage tokens: 401 in the contract's error shape (the two open
  routes answer 200).

Bounded: a fixed number of examples per operation (FUZZ_EXAMPLES, default 40), no shrinking
database, no deadline; the whole module takes well under a minute here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chalicelib.cli import make_token
from chalicelib.openapi import document
from tests.localserver import chalice_local

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
OPERATIONS = [
    (method.upper(), path)
    for path, item in document()["paths"].items()
    for method in item
    if method in ("get", "put", "post", "delete", "patch")
]
# A 503 `unavailable` is the documented answer to a read whose min_version nothing can show yet
# (CONTRACT section 3): checked like any answer, except that it is not a server error.
CHECKS_MIN_VERSION_WAIT = [check for check in CHECKS if check is not not_a_server_error]
MIN_VERSION_WAIT = "503 (min_version not readable yet)"
SECURED = [(m, p) for m, p in OPERATIONS if p not in ("/health", "/openapi.json")]
# Negative generation needs something to violate: parameters or a body.
WITH_INPUT = [
    (m, p)
    for m, p in OPERATIONS
    if document()["paths"][p].get("parameters")
    or document()["paths"][p][m.lower()].get("parameters")
    or "requestBody" in document()["paths"][p][m.lower()]
]
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in WITH_INPUT
]
SEEDED_ID = "0190b2a0-1234-7abc-8def-0123456789ab"
GARBAGE_TOKENS = [
    "garbage",
    "Bearer garbage",
    "a.b.c",
    "..",
    "eyJhbGciOiJub25lIn0.%%%.",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOjF9.",  # sub is a number
    "eyJhbGciOiJub25lIn0.W10.",  # payload is a list
    "eyJhbGciOiJub25lIn0.eyJjb2duaXRvOnVzZXJuYW1lIjoieCJ9.",  # no sub
    "x" * 5000,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chalice_local(tmp_path_factory.mktemp("fuzz-local")) as (base, log_path):
        yield base
    assert "Traceback" not in log_path.read_text(errors="replace"), "the server logged a traceback"


@pytest.fixture(scope="module")
def schema(server: str) -> Any:
    loaded = schemathesis.openapi.from_url(f"{server}/openapi.json")
    assert loaded.raw_schema == document(), "the served document is not chalicelib.openapi.document()"
    return loaded


@pytest.fixture(scope="module")
def tokens(server: str) -> dict[str, str]:
    """alice's token (with a todo of a known id and a profile, so reads also answer 200 and 304),
    and an admin's (the admin route answers 200 for them, 403 for alice)."""
    alice = make_token("alice", None, None, [], 3600)
    headers = {"Authorization": alice, "Content-Type": "application/json"}
    assert requests.put(f"{server}/todos/{SEEDED_ID}", json={"title": "seed"}, headers=headers).status_code == 202
    assert requests.put(f"{server}/me", json={"display_name": "Alice"}, headers=headers).status_code == 202
    return {"alice": alice, "admin": make_token("root", None, None, ["admins"], 3600)}


SEEDS = {"{todo_id}": {"todo_id": SEEDED_ID}, "{sub}": {"sub": "alice"}}


def strategy(schema: Any, method: str, path: str, mode: GenerationMode, headers: dict[str, str]) -> Any:
    operation = schema[path][method]
    generated = operation.as_strategy(generation_mode=mode, headers=headers)
    for variable, known in SEEDS.items():
        if mode is GenerationMode.POSITIVE and variable in path:
            seeded = operation.as_strategy(generation_mode=mode, headers=headers, path_parameters=known)
            return st.one_of(generated, seeded)
    return generated


def fuzz(
    schema: Any,
    server: str,
    method: str,
    path: str,
    mode: GenerationMode,
    auth: dict,
    examples: int = EXAMPLES,
) -> dict[int | str, int]:
    """Run the examples; returns how many answers of each status were seen (a 503 that waits for a
    min_version is counted as MIN_VERSION_WAIT)."""
    seen: dict[int | str, int] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("FUZZ_DERANDOMIZE", "") == "1",
    )
    @given(case=strategy(schema, method, path, mode, auth))
    def run(case: Any) -> None:
        try:
            # A new connection per request: chalice local's server and a kept-alive connection
            # meet Nagle's algorithm and delayed ACKs (40 ms per request instead of 2).
            response = case.call(base_url=server, timeout=30)
        except (requests.exceptions.InvalidHeader, UnicodeEncodeError, ValueError) as exc:
            if "header" in str(exc).lower() or isinstance(exc, UnicodeEncodeError):
                return  # an HTTP client cannot send this header; nothing reached the server
            raise
        waits = (
            method == "GET"
            and response.status_code == 503
            and "min_version" in (case.query or {})
            and response.json().get("error") == "unavailable"
        )
        status: int | str = MIN_VERSION_WAIT if waits else response.status_code
        seen[status] = seen.get(status, 0) + 1
        case.validate_response(response, checks=CHECKS_MIN_VERSION_WAIT if waits else CHECKS)

    run()
    return seen


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_fuzz_with_a_valid_token(
    schema: Any,
    server: str,
    tokens: dict[str, str],
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    token = tokens["admin" if path.startswith("/users/") else "alice"]
    seen = fuzz(schema, server, method, path, mode, {"Authorization": token})
    print(f"{method} {path} [{mode.value}] statuses: {seen}")
    assert seen, "no request reached the server"
    assert not any(isinstance(status, int) and status >= 500 for status in seen)


@pytest.mark.parametrize(("method", "path"), SECURED, ids=[f"{m} {p}" for m, p in SECURED])
def test_fuzz_without_a_token_is_401(schema: Any, server: str, method: str, path: str) -> None:
    seen = fuzz(schema, server, method, path, GenerationMode.POSITIVE, {})
    assert set(seen) == {401}, seen


@pytest.mark.parametrize(("method", "path"), SECURED, ids=[f"{m} {p}" for m, p in SECURED])
def test_fuzz_with_garbage_tokens_is_401(schema: Any, server: str, method: str, path: str) -> None:
    seen: dict[int | str, int] = {}
    for garbage in GARBAGE_TOKENS:
        answers = fuzz(
            schema,
            server,
            method,
            path,
            GenerationMode.POSITIVE,
            {"Authorization": garbage},
            examples=max(3, EXAMPLES // 4),
        )
        for status, count in answers.items():
            seen[status] = seen.get(status, 0) + count
    assert set(seen) == {401}, seen
