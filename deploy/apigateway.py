"""API Gateway settings Chalice cannot make, and which every `chalice deploy` resets.

`chalice deploy` re-imports the REST API from its own swagger (`put_rest_api`, mode overwrite):
method request parameters, integration cache keys and gateway responses go back to Chalice's.
Stage settings (cache cluster, method settings) survive it. So, on every run:

1. before `chalice deploy`: caching is switched off on every method of the stage
   (`cache_guard_calls`), because the deployment Chalice makes has GETs whose cache key holds only
   the path: with caching on, one caller's answer would be served to another;
2. after it: each GET's method request declares, and its integration's cache key holds,
   `Authorization`, `If-None-Match`, its path parameters and the query parameters it reads
   (`cache_key_calls`); the gateway responses answer in the contract's error shape
   (`gateway_response_calls`); then a new deployment of the stage, when any of that changed;
3. only then the stage settings (`stage_calls`): cache cluster, caching on for GETs and off for
   everything else, cache encryption, invalidation (`Cache-Control: max-age=0`) only for callers
   authorised to invalidate, and throttling per method, reads and writes separately.

Each step compares with what is there and plans only the calls that change something, so a run
against an API that is already right plans none. Planned calls are `Call`s, printed by
`--dry-run` and applied otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploy.routes import Route

STAGE_WIDE = "*/*"
MAX_PATCH_OPERATIONS = 50  # per update_stage call; API Gateway refuses very long patch lists
SUCCEED_WITH_RESPONSE_HEADER = "SUCCEED_WITH_RESPONSE_HEADER"


@dataclass(frozen=True)
class Call:
    """One planned boto3 call: `getattr(client, operation)(**params)`."""

    operation: str
    params: Mapping[str, Any]

    def __str__(self) -> str:
        shown = {k: v for k, v in self.params.items() if k not in ("restApiId",)}
        return f"{self.operation} {json.dumps(shown, sort_keys=True, default=str)}"


def apply(client: Any, calls: Iterable[Call]) -> None:
    for call in calls:
        getattr(client, call.operation)(**call.params)


def escape(path: str) -> str:
    """A resource path inside a JSON Pointer (stage patch paths, methodSettings keys)."""
    return path.replace("~", "~0").replace("/", "~1")


def method_key(route: Route) -> str:
    """The methodSettings key of a route: `~1todos~1{todo_id}/GET`."""
    return f"{escape(route.path)}/{route.method}"


# -- cache keys ---------------------------------------------------------------------------------
class ApiShapeError(RuntimeError):
    """The deployed API does not have a route the app declares (deploy and app out of step)."""


def resource_ids(apigw: Any, rest_api_id: str) -> dict[str, str]:
    """Resource path -> resource id, for every resource of the API."""
    out: dict[str, str] = {}
    for page in apigw.get_paginator("get_resources").paginate(restApiId=rest_api_id):
        for item in page.get("items", []):
            out[item["path"]] = item["id"]
    return out


def cache_key_calls(apigw: Any, rest_api_id: str, routes: Sequence[Route], resources: Mapping[str, str]) -> list[Call]:
    """update_method / update_integration calls so every GET's cache key holds what it must."""
    reads = [r for r in routes if r.is_read]
    missing = sorted(r.path for r in reads if r.path not in resources)
    if missing:
        raise ApiShapeError(f"the deployed API has no resource for {', '.join(missing)}; was chalice deploy run?")
    calls: list[Call] = []
    for route in reads:
        where = {"restApiId": rest_api_id, "resourceId": resources[route.path], "httpMethod": route.method}
        method = apigw.get_method(**where)
        declared = method.get("requestParameters") or {}
        keyed = set((method.get("methodIntegration") or {}).get("cacheKeyParameters") or [])
        wanted = route.cache_key_parameters()
        declare = [
            {"op": "add", "path": f"/requestParameters/{p}", "value": str(route.required(p)).lower()}
            for p in wanted
            if p not in declared
        ]
        key = [{"op": "add", "path": f"/cacheKeyParameters/{p}"} for p in wanted if p not in keyed]
        if declare:
            calls.append(Call("update_method", {**where, "patchOperations": declare}))
        if key:
            calls.append(Call("update_integration", {**where, "patchOperations": key}))
    return calls


# -- gateway responses --------------------------------------------------------------------------
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

    def request(self, rest_api_id: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "restApiId": rest_api_id,
            "responseType": self.response_type,
            "responseParameters": self.parameters(),
            "responseTemplates": self.templates(),
        }
        if self.status is not None:
            params["statusCode"] = self.status
        return params


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


def gateway_response_calls(
    apigw: Any, rest_api_id: str, responses: Sequence[GatewayResponse] = GATEWAY_RESPONSES
) -> list[Call]:
    current: dict[str, Mapping[str, Any]] = {}
    for page in apigw.get_paginator("get_gateway_responses").paginate(restApiId=rest_api_id):
        for item in page.get("items", []):
            current[item["responseType"]] = item
    calls = []
    for response in responses:
        have = current.get(response.response_type, {})
        same = (
            (have.get("responseParameters") or {}) == response.parameters()
            and (have.get("responseTemplates") or {}) == response.templates()
            and (response.status is None or have.get("statusCode") == response.status)
        )
        if not same:
            calls.append(Call("put_gateway_response", response.request(rest_api_id)))
    return calls


# -- stage settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Throttle:
    rate: float  # steady requests per second
    burst: int


@dataclass(frozen=True)
class StageSettings:
    cache_size: str = "0.5"  # GB; the smallest cache cluster
    cache_ttl_seconds: int = 30
    reads: Throttle = Throttle(rate=500.0, burst=1000)
    writes: Throttle = Throttle(rate=100.0, burst=200)
    # (METHOD, path) -> a limit of its own. POST /todos/batch carries up to 100 commands per
    # request, so it gets a hundredth of the single-write budget of Firehose records.
    overrides: Mapping[tuple[str, str], Throttle] = field(
        default_factory=lambda: {("POST", "/todos/batch"): Throttle(rate=5.0, burst=10)}
    )
    tracing: bool = True

    def throttle_for(self, route: Route) -> Throttle:
        override = self.overrides.get((route.method, route.path))
        if override is not None:
            return override
        return self.reads if route.is_read else self.writes


FIELD_PATHS = {
    "cachingEnabled": "caching/enabled",
    "cacheTtlInSeconds": "caching/ttlInSeconds",
    "cacheDataEncrypted": "caching/dataEncrypted",
    "requireAuthorizationForCacheControl": "caching/requireAuthorizationForCacheControl",
    "unauthorizedCacheControlHeaderStrategy": "caching/unauthorizedCacheControlHeaderStrategy",
    "throttlingRateLimit": "throttling/rateLimit",
    "throttlingBurstLimit": "throttling/burstLimit",
}


def desired_method_settings(routes: Sequence[Route], settings: StageSettings) -> dict[str, dict[str, Any]]:
    """methodSettings key -> every setting it must have.

    A method's own entry replaces the stage-wide one entirely (it does not inherit from `*/*`),
    so each entry names every setting. `*/*` covers methods the app does not declare: no caching
    and the write limits.
    """

    def entry(caching: bool, throttle: Throttle) -> dict[str, Any]:
        return {
            "cachingEnabled": caching,
            "cacheTtlInSeconds": settings.cache_ttl_seconds,
            "cacheDataEncrypted": True,
            "requireAuthorizationForCacheControl": True,
            "unauthorizedCacheControlHeaderStrategy": SUCCEED_WITH_RESPONSE_HEADER,
            "throttlingRateLimit": float(throttle.rate),
            "throttlingBurstLimit": int(throttle.burst),
        }

    out = {STAGE_WIDE: entry(False, settings.writes)}
    for route in routes:
        out[method_key(route)] = entry(route.is_read, settings.throttle_for(route))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(have: Any, want: Any) -> bool:
    if have is None:
        return False
    if isinstance(want, bool) or isinstance(have, bool):
        return have is want
    if isinstance(want, int | float) and isinstance(have, int | float):
        return float(have) == float(want)
    return bool(have == want)


def stage_patch_operations(
    stage: Mapping[str, Any], routes: Sequence[Route], settings: StageSettings
) -> list[dict[str, str]]:
    """The patch operations that bring `stage` (a get_stage answer) to the settings; none if it is."""
    ops = []
    top = {"cacheClusterEnabled": True, "cacheClusterSize": settings.cache_size, "tracingEnabled": settings.tracing}
    for name, value in top.items():
        if not _same(stage.get(name), value):
            ops.append({"op": "replace", "path": f"/{name}", "value": _text(value)})
    current = stage.get("methodSettings") or {}
    for key, wanted in desired_method_settings(routes, settings).items():
        have = current.get(key) or {}
        for name, value in wanted.items():
            if not _same(have.get(name), value):
                ops.append({"op": "replace", "path": f"/{key}/{FIELD_PATHS[name]}", "value": _text(value)})
    return ops


def _update_stage_calls(rest_api_id: str, stage_name: str, ops: Sequence[Mapping[str, str]]) -> list[Call]:
    return [
        Call(
            "update_stage",
            {
                "restApiId": rest_api_id,
                "stageName": stage_name,
                "patchOperations": list(ops[i : i + MAX_PATCH_OPERATIONS]),
            },
        )
        for i in range(0, len(ops), MAX_PATCH_OPERATIONS)
    ]


def get_stage(apigw: Any, rest_api_id: str, stage_name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(apigw.get_stage(restApiId=rest_api_id, stageName=stage_name))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NotFoundException":
            return None
        raise


def stage_calls(
    apigw: Any, rest_api_id: str, stage_name: str, routes: Sequence[Route], settings: StageSettings
) -> list[Call]:
    """update_stage calls for the settings, then a cache flush when caching is switched back on."""
    stage = get_stage(apigw, rest_api_id, stage_name)
    if stage is None:
        raise ApiShapeError(f"the API {rest_api_id} has no stage {stage_name!r}; was chalice deploy run?")
    ops = stage_patch_operations(stage, routes, settings)
    calls = _update_stage_calls(rest_api_id, stage_name, ops)
    reenabled = any(op["path"].endswith("/caching/enabled") and op["value"] == "true" for op in ops)
    if reenabled and stage.get("cacheClusterEnabled") and stage.get("cacheClusterStatus") == "AVAILABLE":
        # Answers cached before this deployment were made by the previous code.
        calls.append(Call("flush_stage_cache", {"restApiId": rest_api_id, "stageName": stage_name}))
    return calls


def cache_guard_calls(apigw: Any, rest_api_id: str, stage_name: str) -> list[Call]:
    """Caching off on every method of the stage (before `chalice deploy` resets the cache keys)."""
    stage = get_stage(apigw, rest_api_id, stage_name)
    if stage is None:
        return []
    current = stage.get("methodSettings") or {}
    ops = [
        {"op": "replace", "path": f"/{key}/caching/enabled", "value": "false"}
        for key, values in sorted(current.items())
        if values.get("cachingEnabled") is not False
    ]
    if stage.get("cacheClusterEnabled") and STAGE_WIDE not in current:
        # With a cache cluster and no stage-wide entry, API Gateway caches GETs by default.
        ops.insert(0, {"op": "replace", "path": f"/{STAGE_WIDE}/caching/enabled", "value": "false"})
    return _update_stage_calls(rest_api_id, stage_name, ops)


# -- the whole post-deploy configuration ----------------------------------------------------------
def api_definition_calls(
    apigw: Any, rest_api_id: str, stage_name: str, routes: Sequence[Route], description: str = "sluice deploy step"
) -> list[Call]:
    """Cache keys and gateway responses, then a deployment of the stage when any changed."""
    resources = resource_ids(apigw, rest_api_id)
    calls = cache_key_calls(apigw, rest_api_id, routes, resources) + gateway_response_calls(apigw, rest_api_id)
    if calls:
        calls.append(
            Call("create_deployment", {"restApiId": rest_api_id, "stageName": stage_name, "description": description})
        )
    return calls


def configure_api(
    apigw: Any,
    rest_api_id: str,
    stage_name: str,
    routes: Sequence[Route],
    settings: StageSettings,
    dry_run: bool = False,
    log: Any = print,
) -> list[Call]:
    """Everything after `chalice deploy`, in the safe order; returns the calls made (or planned)."""
    definition = api_definition_calls(apigw, rest_api_id, stage_name, routes)
    for call in definition:
        log(("would " if dry_run else "") + str(call))
    if not dry_run:
        apply(apigw, definition)
    # Planned after the definition is live: caching is enabled only where the keys now hold.
    stage = stage_calls(apigw, rest_api_id, stage_name, routes, settings)
    for call in stage:
        log(("would " if dry_run else "") + str(call))
    if not dry_run:
        apply(apigw, stage)
    return definition + stage
