"""API Gateway REST (v1) proxy events as production sends them through CloudFront, with the
Cognito authorizer's claims (every claim a string), and a Lambda context; plus the write
workload the master-load and freshness rows replay."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

API_ID = "a1b2c3d4e5"
DOMAIN = f"{API_ID}.execute-api.us-east-1.amazonaws.com"


class LambdaContext:
    function_name = "sluice-dev"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:sluice-dev"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def claims(sub: str) -> dict[str, str]:
    return {
        "sub": sub,
        "cognito:username": sub,
        "email": f"{sub[:8]}@example.com",
        "email_verified": "true",
        "token_use": "id",
        "auth_time": "1767225600",
        "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example1",
        "aud": "4q2example0client0id000000",
        "event_id": "5b9c2a2e-9c1e-4f0a-8d41-2f4c3c1e0b7a",
        "iat": "1767225600",
        "exp": "Thu Jan 01 01:00:00 UTC 2026",
    }


def api_event(
    method: str,
    resource: str,
    path: str,
    sub: str,
    path_params: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = None,
) -> dict[str, Any]:
    headers = {
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate, br",
        "Authorization": "eyJraWQiOiJFeGFtcGxlIiwiYWxnIjoiUlMyNTYifQ." + "x" * 700 + ".sig",
        "CloudFront-Forwarded-Proto": "https",
        "CloudFront-Is-Desktop-Viewer": "true",
        "CloudFront-Is-Mobile-Viewer": "false",
        "CloudFront-Is-SmartTV-Viewer": "false",
        "CloudFront-Is-Tablet-Viewer": "false",
        "CloudFront-Viewer-ASN": "16509",
        "CloudFront-Viewer-Country": "DE",
        "Host": DOMAIN,
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
        "Via": "2.0 0d1f0e3c2b4a5968778695a4b3c2d1e0.cloudfront.net (CloudFront)",
        "X-Amz-Cf-Id": "Zk6Q1c0E9nM4oQ0q3kX9pW3mG1Vt8yQyN2m4V0a7l5bX8e3hW1tK0A==",
        "X-Amzn-Trace-Id": "Root=1-65a1b2c3-0a1b2c3d4e5f6a7b8c9d0e1f",
        "X-Forwarded-For": "203.0.113.7, 130.176.1.22",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    text = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        text = json.dumps(body)
    request_id = str(uuid.uuid4())
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": dict(path_params) if path_params else None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "authorizer": {"claims": claims(sub)},
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": "Q1w2E3r4T5y6U7i=",
            "requestTime": "01/Jan/2026:00:00:00 +0000",
            "path": f"/api{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": "api",
            "domainPrefix": API_ID,
            "requestTimeEpoch": 1767225600000,
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": "203.0.113.7",
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": headers["User-Agent"],
                "user": None,
            },
            "domainName": DOMAIN,
            "apiId": API_ID,
        },
        "body": text,
        "isBase64Encoded": False,
    }


def get_todo_event(sub: str, todo_id: str) -> dict[str, Any]:
    return api_event("GET", "/todos/{todo_id}", f"/todos/{todo_id}", sub, path_params={"todo_id": todo_id})


def get_list_event(sub: str, list_id: str) -> dict[str, Any]:
    return api_event("GET", "/lists/{list_id}", f"/lists/{list_id}", sub, path_params={"list_id": list_id})


def list_event(sub: str, limit: int = 50) -> dict[str, Any]:
    return api_event("GET", "/todos", "/todos", sub, query={"limit": str(limit)})


def post_event(sub: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return api_event("POST", "/todos", "/todos", sub, body=body or todo_body(random.Random(1)))


# -- the write workload ------------------------------------------------------------------------
WORDS = "buy milk call mum fix bike water plants book flights renew passport file taxes walk dog".split()


def todo_body(rng: random.Random) -> dict[str, Any]:
    return {
        "title": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))).capitalize(),
        "notes": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30))),
        "state": rng.choice(("open", "open", "done")),
        "tags": rng.sample(("home", "work", "errand", "q1", "family", "health"), rng.randint(0, 3)),
        "due_at": rng.choice((None, "2026-03-01T09:00:00Z", "2026-04-15T17:30:00+02:00")),
        "priority": rng.choice((1, 2, 3, 3, 3, 4, 5)),
        "list_id": rng.choice((None, None, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")),
    }


def write_stream(count: int, owners: int = 200, seed: int = 7) -> list[Any]:
    """`count` accepted write commands as the API makes them: 70 % new todos, 25 % updates of
    earlier ones, 5 % deletes, across `owners` users, versions from one VersionClock."""
    from chalicelib.commands import make_command
    from chalicelib.ids import VersionClock, new_op_id, uuid7
    from chalicelib.models import validate_todo

    rng = random.Random(seed)
    clock = VersionClock()
    subs = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(owners)]
    known: list[tuple[str, str]] = []
    out = []
    for _ in range(count):
        roll = rng.random()
        if known and roll < 0.05:
            owner, todo_id = rng.choice(known)
            out.append(make_command("delete", "todos", owner, todo_id, clock.next(), new_op_id(), None))
            continue
        if known and roll < 0.30:
            owner, todo_id = rng.choice(known)
        else:
            owner, todo_id = rng.choice(subs), uuid7()
            known.append((owner, todo_id))
        data = validate_todo(todo_body(rng))
        out.append(make_command("put", "todos", owner, todo_id, clock.next(), new_op_id(), data))
    return out
