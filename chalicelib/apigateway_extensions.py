"""What API Gateway needs beyond the document chalice generates, put into that document.

`chalice deploy` re-imports the whole REST API from the Swagger document it generates, on every
run (`put_rest_api`, mode overwrite): anything set on the API by other calls afterwards, gateway
responses and cache key parameters among them, is gone until set again. A plain
`chalice deploy --stage prod` answered a 401 as `{"message":"Unauthorized"}` and an unknown path
as 403 "Missing Authentication Token", and left GETs without cache keys. API Gateway reads both
from the document itself, so they go there and every deploy sends them:

- `x-amazon-apigateway-gateway-responses` at the document's root: the answers API Gateway makes
  itself, in the contract's error shape (`GATEWAY_RESPONSES`);
- for each GET, the method's `parameters` and its integration's `cacheKeyParameters`: the
  caller's `Authorization`, `If-None-Match`, the path parameters and every query parameter the
  view reads (`min_version` included; deploy/routes.py finds them in the view's source), so that
  API Gateway's stage cache, when a deploy turns it on, keys each GET on everything its answer
  depends on. No `cacheNamespace` is set: API Gateway then uses each resource's own id, so two
  paths never share entries. The integration gets no `requestParameters`: a Lambda proxy
  integration passes the whole request on, and mapping `Authorization` there has been seen to
  make API Gateway answer 500 (serverless-api-gateway-caching, src/cacheKeyParameters.js).

The one place: chalice has no supported hook for extending its document (aws/chalice#1282 and
#1268 ask for gateway responses). Every chalice command that builds one (`deploy`, `package`)
calls `SwaggerGenerator.generate_swagger(app, ...)`, the public method of
chalice/deploy/swagger.py. `install`, called once from app.py, wraps that method so that it
returns chalice's document with `extend`'s additions. It does so only where chalice's CLI has
loaded that module before importing app.py; in Lambda (`chalice.deploy` is not packaged), under
`chalice local` or the test client, nothing changes. A chalice whose `SwaggerGenerator` lacks the
method, or whose document lacks a GET the app declares, stops the deploy with that reason rather
than send a document without them.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

GATEWAY_RESPONSES_KEY = "x-amazon-apigateway-gateway-responses"
INTEGRATION_KEY = "x-amazon-apigateway-integration"
PARAMETER_PLACES = {"header": "header", "querystring": "query", "path": "path"}  # method.request.<place> -> `in`


@dataclass(frozen=True)
class GatewayResponse:
    """An answer API Gateway makes itself, in the contract's error shape."""

    response_type: str
    code: str
    message: str
    status: str | None = None  # None keeps API Gateway's status for this type
    headers: Mapping[str, str] = field(default_factory=dict)

    def parameters(self) -> dict[str, str]:
        values = {"Cache-Control": "no-store", **self.headers}
        return {f"gatewayresponse.header.{name}": f"'{value}'" for name, value in values.items()}

    def templates(self) -> dict[str, str]:
        return {"application/json": json.dumps({"error": self.code, "message": self.message})}

    def document_entry(self) -> dict[str, Any]:
        """Its entry under `x-amazon-apigateway-gateway-responses`."""
        entry: dict[str, Any] = {"responseParameters": self.parameters(), "responseTemplates": self.templates()}
        if self.status is not None:
            entry["statusCode"] = self.status
        return entry


# The messages match chalicelib/localdev.py, which makes `chalice local` answer the same way.
GATEWAY_RESPONSES: tuple[GatewayResponse, ...] = (
    GatewayResponse("UNAUTHORIZED", "unauthorized", "A valid identity token is required."),
    GatewayResponse("ACCESS_DENIED", "forbidden", "You are not allowed to do this."),
    # API Gateway answers an unknown path (or a method the path does not have) with 403
    # "Missing Authentication Token"; to a client that is a 404.
    GatewayResponse("MISSING_AUTHENTICATION_TOKEN", "not_found", "No such path.", status="404"),
    GatewayResponse("THROTTLED", "throttled", "Too many requests; try again shortly.", headers={"Retry-After": "1"}),
    GatewayResponse("REQUEST_TOO_LARGE", "payload_too_large", "The request is too large."),
    GatewayResponse(
        "INTEGRATION_TIMEOUT",
        "unavailable",
        "The service did not answer in time; try again shortly.",
        headers={"Retry-After": "2"},
    ),
    GatewayResponse("DEFAULT_4XX", "bad_request", "The request was rejected."),
    GatewayResponse("DEFAULT_5XX", "internal_error", "Something went wrong on our side."),
)


class DocumentError(RuntimeError):
    """Chalice's document or generator is not what this module extends: nothing is sent."""


def extend(document: dict[str, Any], module: ModuleType) -> dict[str, Any]:
    """`document` (chalice's, for the Chalice app `module.app`) with the gateway responses and
    every GET's cache key; changed in place and returned."""
    from deploy.routes import routes_of  # the deploy tooling: a checkout has it, Lambda does not

    document[GATEWAY_RESPONSES_KEY] = {r.response_type: r.document_entry() for r in GATEWAY_RESPONSES}
    paths = document.get("paths") or {}
    for route in routes_of(module):
        if not route.is_read:
            continue
        operation = (paths.get(route.path) or {}).get(route.method.lower())
        if operation is None or INTEGRATION_KEY not in operation:
            raise DocumentError(f"chalice's document has no {route.method} {route.path} to key")
        add_cache_key(operation, route.cache_key_parameters())
    return document


def add_cache_key(operation: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Declare each key as a method request parameter (API Gateway caches only on declared ones)
    and list them all as the integration's cache key."""
    parameters = operation.setdefault("parameters", [])
    declared = {(p.get("in"), p.get("name")) for p in parameters}
    for key in keys:
        _, _, place, name = key.split(".", 3)  # method.request.<place>.<name>
        where = PARAMETER_PLACES[place]
        if (where, name) not in declared:
            parameters.append({"name": name, "in": where, "required": where == "path", "type": "string"})
    operation[INTEGRATION_KEY]["cacheKeyParameters"] = list(keys)


def install(module_name: str) -> None:
    """Make chalice's `SwaggerGenerator.generate_swagger` return documents extended for the app
    module `module_name`; only in a process where chalice's CLI loaded that module (idempotent)."""
    swagger = sys.modules.get("chalice.deploy.swagger")
    if swagger is None:
        return
    generator = swagger.SwaggerGenerator
    original = getattr(generator, "generate_swagger", None)
    if original is None:
        raise DocumentError(
            "chalice's SwaggerGenerator has no generate_swagger: see chalicelib/apigateway_extensions.py"
        )
    if getattr(original, "sluice_extended", False):
        return

    @functools.wraps(original)
    def generate_swagger(self: Any, app: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        document = original(self, app, *args, **kwargs)
        return extend(document, sys.modules[module_name])

    generate_swagger.sluice_extended = True  # type: ignore[attr-defined]
    generator.generate_swagger = generate_swagger
