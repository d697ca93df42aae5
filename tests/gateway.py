"""API Gateway REST proxy events as production sends them, for `app.app(event, context)`.

Chalice's test client and `chalice local` decode tokens into typed claims (`cognito:groups` a
list, `iat` an int). Behind API Gateway's Cognito authorizer every claim is a string, groups
included ("admins", "a,b" or "[a b]"). These helpers build the production shape by hand.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs


@dataclass
class LambdaContext:
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "sluice-prod"
    memory_limit_in_mb: int = 512

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def prod_claims(sub: str, groups: str | None = None, **extra: str) -> dict[str, str]:
    """Claims as API Gateway's Cognito authorizer passes them: every value a string."""
    claims = {
        "sub": sub,
        "cognito:username": sub,
        "token_use": "id",
        "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example",
        "aud": "example-client-id",
        "auth_time": "1767225600",
        "iat": "1767225600",
        "exp": "Thu Jan 01 01:00:00 UTC 2026",
        "email_verified": "true",
        **extra,
    }
    if groups is not None:
        claims["cognito:groups"] = groups
    return claims


def rest_event(
    method: str,
    resource: str,
    path: str,
    *,
    claims: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    body: str | bytes | None = None,
    query: str = "",
    path_params: dict[str, str] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A REST API (v1) proxy event for one route. `body` bytes travel base64-encoded."""
    headers = dict(headers or {})
    multi_query = {k: v for k, v in parse_qs(query, keep_blank_values=True).items()} if query else None
    encoded = isinstance(body, bytes)
    request_context: dict[str, Any] = {
        "resourcePath": resource,
        "httpMethod": method,
        "path": f"/api{path}",
        "stage": "api",
        "requestId": request_id or str(uuid.uuid4()),
        "identity": {"sourceIp": "203.0.113.7", "userAgent": "tests"},
    }
    if claims is not None:
        request_context["authorizer"] = {"claims": claims}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} if multi_query else None,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": path_params,
        "stageVariables": None,
        "requestContext": request_context,
        "body": base64.b64encode(body).decode() if encoded else body,
        "isBase64Encoded": encoded,
    }


def call(app: Any, event: dict[str, Any], context: Any = None) -> tuple[int, dict[str, str], Any]:
    """Invoke the app as Lambda does; (status, headers, decoded JSON body or raw text)."""
    answer = app(event, context or LambdaContext())
    text = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    try:
        decoded: Any = json.loads(text) if text else None
    except ValueError:
        decoded = text
    return answer["statusCode"], dict(answer.get("headers") or {}), decoded
