"""The deploy step's AWS calls, checked without an AWS account.

Botocore's Stubber answers real clients, so every request the deploy step builds is validated
against the service's model; moto stands in where a whole service is needed (the API stage,
the dry run on an empty account); a small stateful fake shows what a second run does after a
first one, and after `chalice deploy` has reset the API in between.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from deploy import apigateway, capacity, functions, render, stacks
from deploy import deploy as deploy_step
from deploy.apigateway import GATEWAY_RESPONSES, StageSettings, Throttle
from deploy.routes import AUTHORIZATION, IF_NONE_MATCH, RouteError, routes_of
from tests.deploy.conftest import (
    ACCOUNT,
    OUTPUTS,
    REGION,
    ROOT,
    FakeApiGateway,
    client,
    committed_config_text,
    mock_method,
    replace_stage_settings,
)

# The prod stage's throttles, from its template (deploy/capacity.py): the one place they are written.
PROD = capacity.load(ROOT, "prod")

API_ID = "a1b2c3d4e5"
LAMBDA_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:sluice-prod"
CONTRACT_SECTION_6 = {
    "DATABASE_URL",
    "REPLICA_URLS",
    "WRITE_TRANSPORT",
    "FIREHOSE_STREAM",
    "WRITES_BUCKET",
    "LOCAL_DATA_DIR",
    "CACHE_URL",
    "MAX_BODY_BYTES",
    "CACHE_MAX_AGE",
}


# -- helpers ------------------------------------------------------------------------------------
def get_routes_from_app(app: Any) -> list[tuple[str, list[str]]]:
    """GET routes and their path parameters, read straight from Chalice's route table."""
    return [
        (path, re.findall(r"\{([^}]+)\}", path)) for path, methods in sorted(app.routes.items()) if "GET" in methods
    ]


def resource_ids_for(routes: list[Any]) -> dict[str, str]:
    return {path: f"res{i:03d}" for i, path in enumerate(sorted({"/", *(r.path for r in routes)}))}


def stub_resources(stub: Stubber, resources: dict[str, str]) -> None:
    items = [{"id": rid, "path": path} for path, rid in resources.items()]
    stub.add_response("get_resources", {"items": items}, {"restApiId": API_ID})


def chalice_method(route: Any) -> dict[str, Any]:
    """get_method as Chalice's import leaves it: path parameters declared, no cache key."""
    return {
        "httpMethod": route.method,
        "requestParameters": {f"method.request.path.{p}": True for p in route.path_params},
        "methodIntegration": {"type": "AWS_PROXY", "httpMethod": "POST"},
    }


# -- routes come from the app -------------------------------------------------------------------
def test_routes_are_every_route_of_the_app(app_module):
    routes = routes_of(app_module)
    table = {(path, method) for path, methods in app_module.app.routes.items() for method in methods}
    assert {(r.path, r.method) for r in routes} == table
    assert {r.path for r in routes if r.is_read} == {path for path, _ in get_routes_from_app(app_module.app)}


def test_query_parameters_are_read_from_the_views(app_module):
    by_view = {r.view_name: r for r in routes_of(app_module)}
    # GET /todos and GET /users/{sub}/todos both page through the same reading of the page.
    # min_version is read (through _min_version) by every GET that takes it, so it is in their
    # stage cache keys: a read asking for a newer version is never answered from an older entry.
    # The admin route does not take it (an unknown parameter there, ignored).
    # The routes derived from a declaration (chalicelib/routes.py) name what they read: the page
    # parameters and the collection's declared filters.
    assert by_view["list_todos"].query_params == ("cursor", "limit", "list_id", "min_version", "state")
    assert by_view["admin_list_todos"].query_params == ("cursor", "limit", "list_id", "state")
    assert by_view["get_todo"].query_params == ("min_version",)
    assert by_view["get_me"].query_params == ("min_version",)
    assert by_view["list_lists"].query_params == ("cursor", "limit", "min_version")
    assert by_view["get_list"].query_params == ("min_version",)


def write_module(tmp_path: Path, name: str, source: str) -> Any:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_a_new_get_route_names_every_input_of_its_answer(tmp_path):
    # GIVEN an app with a GET route the deploy step has never heard of
    module = write_module(
        tmp_path,
        "newapp_cachekey",
        """
        from chalice import Chalice
        from chalicelib.http import query_value

        app = Chalice(app_name="sluice")

        def _page(request):
            return query_value(request, "after")

        @app.route("/things/{thing_id}/parts", methods=["GET"])
        def parts(thing_id):
            return {"q": query_value(app.current_request, "q"), "after": _page(app.current_request)}

        @app.route("/things/{thing_id}/parts", methods=["POST"])
        def add_part(thing_id):
            return {}
        """,
    )
    # WHEN its routes are read THEN the GET names every input a cache key would need
    (route,) = [r for r in routes_of(module) if r.is_read]
    assert route.cache_key_parameters() == (
        AUTHORIZATION,
        IF_NONE_MATCH,
        "method.request.path.thing_id",
        "method.request.querystring.after",
        "method.request.querystring.q",
    )


def test_reading_query_params_directly_stops_the_deploy(tmp_path):
    module = write_module(
        tmp_path,
        "newapp_rawquery",
        """
        from chalice import Chalice

        app = Chalice(app_name="sluice")

        @app.route("/search", methods=["GET"])
        def search():
            return {"q": (app.current_request.query_params or {}).get("q")}
        """,
    )
    with pytest.raises(RouteError, match="query_params"):
        routes_of(module)
    # The document chalice sends needs each GET's key: chalice deploy stops there, before any call
    from chalice.deploy.swagger import SwaggerGenerator

    from chalicelib import apigateway_extensions

    document = SwaggerGenerator("eu-west-1", {"api_handler_arn": LAMBDA_ARN}).generate_swagger(module.app)
    with pytest.raises(RouteError, match="query_params"):
        apigateway_extensions.extend(document, module)
    # The stage step needs no query analysis while the stage cache is off: it goes on.
    (route,) = routes_of(module, queries=False)
    assert route.path == "/search" and route.query_params == ()


# -- what a cached GET must be keyed on ---------------------------------------------------------
def test_every_get_route_names_authorization_its_path_and_its_query(app_module):
    by_path = {r.path: r for r in routes_of(app_module) if r.is_read}
    # Derived from the app's route table here, independently of deploy.routes.
    for path, path_params in get_routes_from_app(app_module.app):
        keyed = by_path[path].cache_key_parameters()
        assert AUTHORIZATION in keyed and IF_NONE_MATCH in keyed, path
        for name in path_params:
            assert f"method.request.path.{name}" in keyed, path
    assert {f"method.request.querystring.{q}" for q in ("limit", "cursor", "state", "min_version")} <= set(
        by_path["/todos"].cache_key_parameters()
    )


def stage_with(cache: bool, settings: dict[str, Any]) -> dict[str, Any]:
    return {"stageName": "api", "cacheClusterEnabled": cache, "methodSettings": settings}


def test_the_key_check_flags_a_cached_get_whose_key_misses_an_input(app_module):
    routes = [r for r in routes_of(app_module) if r.path in ("/todos/{todo_id}", "/me")]
    fake = FakeApiGateway(routes)
    key = fake.methods[(fake.resources["/todos/{todo_id}"], "GET")]["methodIntegration"]["cacheKeyParameters"]
    key += [AUTHORIZATION, IF_NONE_MATCH, "method.request.path.todo_id"]  # no min_version
    fake.stage = stage_with(True, {"~1me/GET": {"cachingEnabled": False}})

    # The route analysis finds min_version among the query parameters the view reads.
    assert all("method.request.querystring.min_version" in r.cache_key_parameters() for r in routes if r.is_read)
    unsafe = apigateway.cached_gets_without_keys(fake, API_ID, "api", lambda r: r.cache_key_parameters(), routes)

    assert unsafe == ["GET /todos/{todo_id} cached without method.request.querystring.min_version"]
    fake.stage = stage_with(False, {})  # no cache cluster: nothing is cached whatever the settings
    assert apigateway.cached_gets_without_keys(fake, API_ID, "api", lambda r: r.cache_key_parameters(), routes) == []


# -- the document chalice sends ------------------------------------------------------------------
@pytest.fixture
def chalice_document(app_module, monkeypatch) -> dict[str, Any]:
    """The document `chalice deploy` sends for the app (chalice's own generator, as its deployer
    makes it, with the app's extension installed as chalice's CLI installs it)."""
    from chalice.deploy import swagger

    from chalicelib import apigateway_extensions

    # Put the class back as it was after the test: install wraps it for the rest of the process.
    monkeypatch.setattr(swagger.SwaggerGenerator, "generate_swagger", swagger.SwaggerGenerator.generate_swagger)
    apigateway_extensions.install(app_module.__name__)
    apigateway_extensions.install(app_module.__name__)  # a second import changes nothing
    generator = swagger.SwaggerGenerator("eu-west-1", {"api_handler_arn": LAMBDA_ARN})
    return dict(generator.generate_swagger(app_module.app))


def test_no_get_that_can_be_cached_lacks_the_callers_token_in_its_key(chalice_document, app_module):
    # Every GET can be cached once the stage cache is on: each must be keyed on Authorization,
    # declared as a method request parameter, or one caller's answer goes to another.
    gets = [(path, ops["get"]) for path, ops in chalice_document["paths"].items() if "get" in ops]
    assert {path for path, _ in gets} == {r.path for r in routes_of(app_module) if r.is_read}
    for path, operation in gets:
        keys = operation["x-amazon-apigateway-integration"].get("cacheKeyParameters") or []
        assert AUTHORIZATION in keys, path
        assert {"name": "Authorization", "in": "header", "required": False, "type": "string"} in operation["parameters"]
    for path, ops in chalice_document["paths"].items():
        for verb, operation in ops.items():
            if verb != "get":
                assert "cacheKeyParameters" not in operation["x-amazon-apigateway-integration"], (verb, path)


def test_the_document_carries_the_gateway_responses_in_the_contracts_shape(chalice_document):
    from chalicelib.apigateway_extensions import GATEWAY_RESPONSES_KEY

    sent = chalice_document[GATEWAY_RESPONSES_KEY]
    assert set(sent) == {r.response_type for r in GATEWAY_RESPONSES}
    for entry in sent.values():
        body = json.loads(entry["responseTemplates"]["application/json"])
        assert set(body) == {"error", "message"}
        assert entry["responseParameters"]["gatewayresponse.header.Cache-Control"] == "'no-store'"
    assert sent["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    assert "statusCode" not in sent["UNAUTHORIZED"]  # API Gateway's own 401 stays


def test_the_stage_cache_is_not_turned_on_over_gets_without_their_keys(app_module):
    # GIVEN an API deployed from a document without cache keys (app.py without the extension)
    routes = routes_of(app_module)
    fake = FakeApiGateway(routes)
    settings = PROD.stage_settings(cache_ttl=10)
    log: list[str] = []

    with pytest.raises(apigateway.ApiShapeError, match="stage cache was not turned on"):
        apigateway.configure_api(fake, API_ID, "api", routes, settings, log=log.append)

    # THEN the stage was still set (throttles), with no cache anywhere
    assert not fake.stage["cacheClusterEnabled"]
    assert not any(entry["cachingEnabled"] for entry in fake.stage["methodSettings"].values())
    assert any("GET /todos/{todo_id} has no" in line for line in log)
    # AND with the keys the document carries, the same call turns it on for the GETs only
    for route in routes:
        method = fake.methods[(fake.resources[route.path], route.method)]
        if route.is_read:
            method["methodIntegration"]["cacheKeyParameters"] = list(route.cache_key_parameters())
    apigateway.configure_api(fake, API_ID, "api", routes, settings, log=log.append)
    assert fake.stage["cacheClusterEnabled"]
    assert apigateway.current_cache_ttl(fake.stage) == 10
    cached = {key for key, entry in fake.stage["methodSettings"].items() if entry["cachingEnabled"]}
    assert cached == {apigateway.method_key(r) for r in routes if r.is_read}
    assert apigateway.cached_gets_without_keys(fake, API_ID, "api", lambda r: r.cache_key_parameters(), routes) == []


@pytest.mark.parametrize(
    "argv, ttl",
    [
        ([], None),
        (["--api-cache-ttl"], apigateway.DEFAULT_CACHE_TTL),
        (["--api-cache-ttl", "30"], 30),
        (["--api-cache-ttl", "0"], 0),
    ],
)
def test_the_stage_cache_is_a_deploy_parameter_off_unless_given(argv, ttl):
    _, options = deploy_step.parse_args(argv)
    assert options.api_cache_ttl == ttl


@pytest.mark.parametrize("value", ["-1", "3601", "ten"])
def test_a_bad_cache_ttl_is_refused(value, capsys):
    with pytest.raises(SystemExit) as raised:
        deploy_step.parse_args(["--api-cache-ttl", value])
    assert raised.value.code == 2
    assert "from 0 (off) to 3600" in capsys.readouterr().err


# -- gateway responses --------------------------------------------------------------------------
def test_gateway_responses_answer_in_the_contracts_error_shape():
    apigw = client("apigateway")
    defaults = [
        {"responseType": r.response_type, "defaultResponse": True, "responseTemplates": {}} for r in GATEWAY_RESPONSES
    ]
    with Stubber(apigw) as stub:
        stub.add_response("get_gateway_responses", {"items": defaults}, {"restApiId": API_ID})
        calls = apigateway.gateway_response_calls(apigw, API_ID)
    sent = {c.params["responseType"]: c.params for c in calls}
    assert {"UNAUTHORIZED", "ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(sent)
    for params in sent.values():
        body = json.loads(params["responseTemplates"]["application/json"])
        assert set(body) == {"error", "message"} and all(isinstance(v, str) and v for v in body.values())
        assert params["responseParameters"]["gatewayresponse.header.Cache-Control"] == "'no-store'"
    assert json.loads(sent["UNAUTHORIZED"]["responseTemplates"]["application/json"])["error"] == "unauthorized"
    assert json.loads(sent["ACCESS_DENIED"]["responseTemplates"]["application/json"])["error"] == "forbidden"
    assert sent["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    assert json.loads(sent["DEFAULT_5XX"]["responseTemplates"]["application/json"])["error"] == "internal_error"
    assert "statusCode" not in sent["UNAUTHORIZED"]  # API Gateway's own 401 stays


def test_gateway_responses_match_what_chalice_local_answers():
    # chalicelib/localdev.py makes `chalice local` answer like the deployed API; same words.
    localdev = (ROOT / "chalicelib" / "localdev.py").read_text()
    for response in GATEWAY_RESPONSES:
        if response.response_type in ("UNAUTHORIZED", "ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN"):
            assert f'_body("{response.code}", "{response.message}")' in localdev, response.response_type


# -- stage settings -----------------------------------------------------------------------------
def test_reads_and_writes_are_throttled_separately_and_nothing_is_cached(app_module):
    settings = PROD.stage_settings()
    routes = routes_of(app_module)
    wanted = apigateway.desired_method_settings(routes, settings)
    for route in routes:
        entry = wanted[apigateway.method_key(route)]
        if (route.method, route.path) in settings.overrides:
            expected = settings.overrides[(route.method, route.path)]
        else:
            expected = settings.reads if route.method == "GET" else settings.writes
        assert (entry["throttlingRateLimit"], entry["throttlingBurstLimit"]) == (expected.rate, expected.burst)
        assert entry["cachingEnabled"] is False, route
    assert settings.reads != settings.writes
    # Methods the app does not declare fall under */*: no cache, the write limits.
    assert wanted["*/*"]["cachingEnabled"] is False
    assert wanted["*/*"]["throttlingRateLimit"] == settings.writes.rate
    # An override names a route that exists (a renamed route would silently lose its limit).
    table = {(m, p) for p, methods in app_module.app.routes.items() for m in methods}
    assert set(settings.overrides) <= table


def test_stage_patch_paths_land_where_api_gateway_reads_them(app_module):
    import boto3
    from moto import mock_aws

    routes = routes_of(app_module)
    settings = StageSettings(reads=Throttle(321.0, 654), writes=Throttle(12.0, 34))
    with mock_aws():
        apigw = boto3.client("apigateway", region_name=REGION)
        api = apigw.create_rest_api(name="sluice", endpointConfiguration={"types": ["REGIONAL"]})["id"]
        ids = {"/": next(i["id"] for i in apigw.get_resources(restApiId=api)["items"])}
        prefixes = {r.path[:i] for r in routes for i in range(1, len(r.path) + 1) if r.path[i : i + 1] in ("/", "")}
        for path in sorted(prefixes - {"/"}, key=lambda p: p.count("/")):
            parent, _, part = path.rpartition("/")
            ids[path] = apigw.create_resource(restApiId=api, parentId=ids[parent or "/"], pathPart=part)["id"]
        for route in routes:
            mock_method(apigw, api, ids[route.path], route.method)
        apigw.create_deployment(restApiId=api, stageName="api")
        # GIVEN the stage cache an earlier version of this step switched on
        replace_stage_settings(
            apigw, api, "api", {"/cacheClusterEnabled": "true", "/~1todos/GET/caching/enabled": "true"}
        )
        assert apigateway.resource_ids(apigw, api) == ids  # every resource, intermediate ones too

        apigateway.apply(apigw, apigateway.stage_calls(apigw, api, "api", routes, settings))
        stage = apigw.get_stage(restApiId=api, stageName="api")
        assert stage["cacheClusterEnabled"] is False
        got = stage["methodSettings"]
        assert got["~1todos/GET"]["cachingEnabled"] is False
        assert got["~1todos~1{todo_id}/GET"]["throttlingRateLimit"] == 321.0
        assert got["~1todos~1{todo_id}/PUT"]["throttlingBurstLimit"] == 34
        assert got["*/*"]["cachingEnabled"] is False
        # Run again against what the first run left: nothing to do.
        assert apigateway.stage_calls(apigw, api, "api", routes, settings) == []


def test_stage_patch_operations_are_chunked(app_module, monkeypatch):
    monkeypatch.setattr(apigateway, "MAX_PATCH_OPERATIONS", 10)
    routes = routes_of(app_module)
    apigw = client("apigateway")
    with Stubber(apigw) as stub:
        stub.add_response(
            "get_stage", {"stageName": "api", "cacheClusterEnabled": True}, {"restApiId": API_ID, "stageName": "api"}
        )
        calls = apigateway.stage_calls(apigw, API_ID, "api", routes, PROD.stage_settings())
    assert len(calls) >= 2  # more operations than one call may carry
    ops = [op for c in calls for op in c.params["patchOperations"]]
    assert all(len(c.params["patchOperations"]) <= apigateway.MAX_PATCH_OPERATIONS for c in calls)
    assert {"op": "replace", "path": "/cacheClusterEnabled", "value": "false"} in ops
    assert {"op": "replace", "path": "/*/*/caching/enabled", "value": "false"} in ops
    assert {"op": "replace", "path": "/~1todos/GET/throttling/rateLimit", "value": "500.0"} in ops


def conflict() -> Any:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {
                "Code": "ConflictException",
                "Message": "Unable to complete operation due to concurrent modification",
            }
        },
        "UpdateStage",
    )


def test_a_conflict_is_retried_with_backoff():
    apigw = client("apigateway")
    slept: list[float] = []
    call = apigateway.Call("update_stage", {"restApiId": API_ID, "stageName": "api", "patchOperations": []})
    with Stubber(apigw) as stub:
        for _ in range(3):
            stub.add_client_error("update_stage", "ConflictException", http_status_code=409)
        stub.add_response("update_stage", {}, call.params)
        apigateway.apply(apigw, [call], sleep=slept.append)
        stub.assert_no_pending_responses()
    assert slept == list(apigateway.RETRY_DELAYS[:3])


def test_a_conflict_that_does_not_clear_is_reported_and_other_errors_are_not_retried():
    from botocore.exceptions import ClientError

    apigw = client("apigateway")
    slept: list[float] = []
    call = apigateway.Call("update_stage", {"restApiId": API_ID, "stageName": "api", "patchOperations": []})
    with Stubber(apigw) as stub:
        for _ in range(len(apigateway.RETRY_DELAYS) + 1):
            stub.add_client_error("update_stage", "ConflictException", http_status_code=409)
        with pytest.raises(ClientError, match="ConflictException"):
            apigateway.apply(apigw, [call], sleep=slept.append)
    assert slept == list(apigateway.RETRY_DELAYS)
    with Stubber(apigw) as stub:
        stub.add_client_error("update_stage", "BadRequestException", http_status_code=400)
        with pytest.raises(ClientError, match="BadRequestException"):
            apigateway.apply(apigw, [call], sleep=slept.append)
    assert len(slept) == len(apigateway.RETRY_DELAYS)


def test_stage_settings_wait_for_a_cache_cluster_change_to_settle():
    apigw = client("apigateway")
    slept: list[float] = []
    where = {"restApiId": API_ID, "stageName": "api"}
    with Stubber(apigw) as stub:
        for status in ("DELETE_IN_PROGRESS", "DELETE_IN_PROGRESS", "NOT_AVAILABLE"):
            stub.add_response("get_stage", {"stageName": "api", "cacheClusterStatus": status}, where)
        assert apigateway.wait_for_cache_cluster(apigw, API_ID, "api", sleep=slept.append) == "NOT_AVAILABLE"
    assert len(slept) == 2
    with Stubber(apigw) as stub:
        for _ in range(3):
            stub.add_response("get_stage", {"stageName": "api", "cacheClusterStatus": "CREATE_IN_PROGRESS"}, where)
        with pytest.raises(apigateway.ApiShapeError, match="still CREATE_IN_PROGRESS"):
            apigateway.wait_for_cache_cluster(apigw, API_ID, "api", sleep=slept.append, attempts=3)


# -- the whole API configuration, twice ---------------------------------------------------------
def test_second_run_changes_nothing_and_a_chalice_redeploy_is_repaired(app_module):
    routes = routes_of(app_module)
    fake = FakeApiGateway(routes)
    settings = PROD.stage_settings()
    log: list[str] = []

    first = apigateway.configure_api(fake, API_ID, "api", routes, settings, log=log.append)
    assert fake.deployments == 1 and [c.operation for c in first].count("create_deployment") == 1

    fake.calls.clear()
    second = apigateway.configure_api(fake, API_ID, "api", routes, settings, log=log.append)
    assert second == []
    assert "update_stage" not in fake.calls and "create_deployment" not in fake.calls

    # chalice deploy resets methods and gateway responses; stage settings stay (no cache).
    fake.chalice_redeploy()
    assert apigateway.cached_gets_without_keys(fake, API_ID, "api", lambda r: r.cache_key_parameters(), routes) == []
    third = apigateway.configure_api(fake, API_ID, "api", routes, settings, log=log.append)
    assert [c.operation for c in third].count("create_deployment") == 1


def test_dry_run_plans_without_changing(app_module):
    routes = routes_of(app_module)
    fake = FakeApiGateway(routes)
    planned = apigateway.configure_api(
        fake, API_ID, "api", routes, PROD.stage_settings(), dry_run=True, log=lambda _: None
    )
    assert planned and fake.deployments == 0 and fake.stage["methodSettings"] == {}
    assert "update_stage" not in fake.calls and "put_gateway_response" not in fake.calls


# -- the web ACL on the stage, log retention -------------------------------------------------------
def test_the_stage_is_associated_with_the_regional_web_acl_once():
    waf = client("wafv2")
    acl = OUTPUTS["ApiWebAclArn"]
    stage = apigateway.stage_arn("aws", REGION, API_ID, "api")
    assert stage == f"arn:aws:apigateway:{REGION}::/restapis/{API_ID}/stages/api"
    with Stubber(waf) as stub:
        stub.add_response("get_web_acl_for_resource", {}, {"ResourceArn": stage})
        (call,) = apigateway.web_acl_calls(waf, acl, stage)
    assert call == apigateway.Call("associate_web_acl", {"WebACLArn": acl, "ResourceArn": stage})
    with Stubber(waf) as stub:
        web_acl = {
            "Name": "sluice-prod-api",
            "Id": "0123abcd-4567-89ef-0123-456789abcdef",
            "ARN": acl,
            "DefaultAction": {"Block": {}},
            "VisibilityConfig": {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": "m"},
        }
        stub.add_response("get_web_acl_for_resource", {"WebACL": web_acl}, {"ResourceArn": stage})
        assert apigateway.web_acl_calls(waf, acl, stage) == []


def test_every_function_gets_a_log_group_with_retention():
    logs = client("logs")
    with Stubber(logs) as stub:
        stub.add_response(
            "describe_log_groups",
            {
                "logGroups": [
                    {"logGroupName": "/aws/lambda/sluice-prod", "retentionInDays": 90},
                    {"logGroupName": "/aws/lambda/sluice-prod-load_writes"},
                ]
            },
            {"logGroupNamePrefix": "/aws/lambda/"},
        )
        calls = functions.log_retention_calls(logs, ["sluice-prod", "sluice-prod-load_writes", "sluice-prod-migrate"])
    assert [(c.operation, c.params["logGroupName"]) for c in calls] == [
        ("put_retention_policy", "/aws/lambda/sluice-prod-load_writes"),
        ("create_log_group", "/aws/lambda/sluice-prod-migrate"),
        ("put_retention_policy", "/aws/lambda/sluice-prod-migrate"),
    ]


# -- the loader's asynchronous invocation ---------------------------------------------------------
LOADER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sluice-prod-load_writes"


def test_async_invoke_config_is_set_when_missing():
    lam = client("lambda")
    queue = OUTPUTS["LoaderFailureQueueArn"]
    with Stubber(lam) as stub:
        stub.add_client_error(
            "get_function_event_invoke_config",
            "ResourceNotFoundException",
            expected_params={"FunctionName": LOADER_ARN},
        )
        calls = functions.async_invoke_calls(lam, functions.LOADER_ASYNC, LOADER_ARN, queue)
        stub.add_response(
            "put_function_event_invoke_config",
            {},
            {
                "FunctionName": LOADER_ARN,
                "MaximumRetryAttempts": 2,
                "MaximumEventAgeInSeconds": 21600,
                "DestinationConfig": {"OnFailure": {"Destination": queue}},
            },
        )
        apigateway.apply(lam, calls)
        stub.assert_no_pending_responses()
    assert functions.LOADER_ASYNC.destination_output == "LoaderFailureQueueArn"


def test_async_invoke_config_already_right_makes_no_call():
    lam = client("lambda")
    queue = OUTPUTS["LoaderFailureQueueArn"]
    current = {
        "FunctionArn": LOADER_ARN,
        "MaximumRetryAttempts": 2,
        "MaximumEventAgeInSeconds": 21600,
        "DestinationConfig": {"OnSuccess": {}, "OnFailure": {"Destination": queue}},
    }
    with Stubber(lam) as stub:
        stub.add_response("get_function_event_invoke_config", current, {"FunctionName": LOADER_ARN})
        assert functions.async_invoke_calls(lam, functions.LOADER_ASYNC, LOADER_ARN, queue) == []
    with Stubber(lam) as stub:
        stale = {**current, "DestinationConfig": {"OnFailure": {"Destination": queue + "-old"}}}
        stub.add_response("get_function_event_invoke_config", stale, {"FunctionName": LOADER_ARN})
        (call,) = functions.async_invoke_calls(lam, functions.LOADER_ASYNC, LOADER_ARN, queue)
    assert call.params["DestinationConfig"] == {"OnFailure": {"Destination": queue}}


# -- outputs -> configuration -------------------------------------------------------------------
def test_outputs_fill_the_prod_environment(config, variables):
    rendered = render.render_stage_config(config, "prod", variables)
    prod = rendered["stages"]["prod"]
    env = prod["environment_variables"]
    replicas = OUTPUTS["ReplicaEndpoints"].split(",")
    assert env == {
        "SLUICE_STAGE": "prod",
        "WRITE_TRANSPORT": "firehose",
        "FIREHOSE_STREAM": OUTPUTS["FirehoseStreamName"],
        "WRITES_BUCKET": OUTPUTS["WritesBucketName"],
        # The master's instance endpoint loads (LOAD DATA LOCAL, temporary tables and SET SESSION
        # never go through RDS Proxy), reads fall back to the master through the proxy. The
        # proxy's certificate chains to Amazon's roots (the runtime's store), the instances' to
        # the RDS CA bundle packaged with the app; all verified, host names included.
        "DATABASE_URL": f"mysql://{OUTPUTS['MasterEndpoint']}:3306/sluice?ssl=verify_identity&ssl_ca=rds",
        "MASTER_READ_URL": f"mysql://{OUTPUTS['ProxyEndpoint']}:3306/sluice?ssl=verify_identity&ssl_ca=system",
        "DATABASE_SECRET_ARN": OUTPUTS["DatabaseSecretArn"],
        "REPLICA_URLS": ",".join(f"mysql://{host}:3306/sluice?ssl=verify_identity&ssl_ca=rds" for host in replicas),
        "COGNITO_USER_POOL_ARN": OUTPUTS["UserPoolArn"],
    }
    assert prod["subnet_ids"] == OUTPUTS["PrivateSubnetIds"].split(",")
    assert prod["security_group_ids"] == [OUTPUTS["LambdaSecurityGroupId"]]
    assert "${" not in json.dumps(prod)
    assert rendered["stages"]["dev"] == config["stages"]["dev"]


def test_cache_url_is_set_only_when_the_stack_has_a_cache(config, outputs):
    with_cache = {**outputs, "CacheUrl": "rediss://cache.example:6379/0"}
    variables = render.template_variables(
        with_cache, partition="aws", region=REGION, account_id=ACCOUNT, stage="prod", app_name="sluice"
    )
    env = render.render_stage_config(config, "prod", variables)["stages"]["prod"]["environment_variables"]
    assert env["CACHE_URL"] == "rediss://cache.example:6379/0"


def test_a_missing_output_stops_the_render(config, outputs):
    del outputs["FirehoseStreamName"]
    variables = render.template_variables(
        outputs, partition="aws", region=REGION, account_id=ACCOUNT, stage="prod", app_name="sluice"
    )
    with pytest.raises(render.RenderError, match="FirehoseStreamName"):
        render.render_stage_config(config, "prod", variables)


def test_dev_stage_pins_none_of_the_contract_variables(config):
    dev = config["stages"]["dev"]
    pinned = set(dev.get("environment_variables", {})) | set(config.get("environment_variables", {}))
    for function in dev.get("lambda_functions", {}).values():
        pinned |= set(function.get("environment_variables", {}))
    assert not pinned & CONTRACT_SECTION_6


def test_the_committed_config_holds_no_account_values_and_no_prod_stage():
    # `make infra` writes the prod stage; the committed file keeps only the local stage.
    committed = json.loads(committed_config_text())
    assert set(committed["stages"]) == {"dev"}
    assert "never run" not in json.dumps(committed).lower()


def test_prod_stage_settings(config):
    prod = config["stages"]["prod"]
    assert prod["api_gateway_endpoint_type"] == "REGIONAL"
    assert prod["api_gateway_stage"] == "api"
    assert prod["autogen_policy"] is False and prod["xray"] is True
    functions_config = prod["lambda_functions"]
    for name in ("api_handler", "load_writes", "reconcile_writes"):
        assert functions_config[name]["reserved_concurrency"] >= 1, name
        assert functions_config[name]["iam_policy_file"].startswith("policy-prod-"), name
    deploy_step.check_templates(ROOT, config, "prod")


def copy_project(target: Path) -> Path:
    for entry in ("app.py", "requirements.txt", "chalicelib", "deploy", ".chalice", "infrastructure"):
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(
                source, target / entry, ignore=shutil.ignore_patterns("deployed", "deployments", "__pycache__")
            )
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / entry)
    return target


def test_infra_writes_the_stage_into_the_project_and_keeps_the_others(tmp_path, config, variables):
    project = copy_project(tmp_path / "project")
    rendered = render.render_stage_config(config, "prod", variables)
    policies = render.render_policies(project, config, "prod", variables)

    written = render.write_stage(project, rendered, "prod", policies)

    on_disk = json.loads((project / ".chalice" / "config.json").read_text())
    assert on_disk["stages"]["prod"] == rendered["stages"]["prod"]
    assert on_disk["stages"]["dev"] == json.loads(committed_config_text())["stages"]["dev"]
    assert sorted(p.name for p in written) == sorted(["config.json", *policies])
    for name, document in policies.items():
        assert json.loads((project / ".chalice" / name).read_text()) == document
    # Written again (a second `make infra`): the same files, the templates untouched.
    render.write_stage(project, rendered, "prod", policies)
    assert json.loads((project / ".chalice" / "config.json").read_text()) == on_disk
    assert "${" in (project / ".chalice" / "templates" / "stage-prod.json").read_text()


def test_the_filled_project_is_what_a_plain_chalice_deploy_deploys(tmp_path, config, variables):
    # GIVEN the project as `make infra` leaves it
    project = copy_project(tmp_path / "project")
    rendered = render.render_stage_config(config, "prod", variables)
    render.write_stage(project, rendered, "prod", render.render_policies(project, config, "prod", variables))
    # WHEN Chalice builds its deployment graph there, in a shell that exported nothing
    script = textwrap.dedent(
        """
        import json, os
        from chalice.cli.factory import CLIFactory
        from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
        from chalice.deploy.validate import validate_configuration
        # as `chalice` does (chalice/cli/__init__.py): the stage's variables go into os.environ
        config = CLIFactory(".", environ=os.environ).create_config_obj("prod")
        validate_configuration(config)
        graph = ApplicationGraphBuilder().build(config, "prod")
        out = {"functions": {}, "notifications": [], "authorizers": []}
        for r in DependencyBuilder().build_dependencies(graph):
            kind = type(r).__name__
            if kind == "LambdaFunction":
                out["functions"][r.function_name] = {
                    "role": r.role.role_name, "policy": r.role.policy.filename.rsplit("/", 1)[-1],
                    "concurrency": r.reserved_concurrency, "xray": r.xray, "subnets": r.subnet_ids,
                    "groups": r.security_group_ids, "env": r.environment_variables}
            elif kind == "S3BucketNotification":
                out["notifications"].append([r.bucket, r.prefix, r.lambda_function.function_name])
            elif kind == "RestAPI":
                out["endpoint"] = r.endpoint_type
                out["stage"] = r.api_gateway_stage
        from chalice.deploy.swagger import SwaggerGenerator
        arn = "arn:aws:lambda:eu-west-1:123456789012:function:sluice-prod"
        swagger = SwaggerGenerator("eu-west-1", {"api_handler_arn": arn}).generate_swagger(config.chalice_app)
        out["authorizers"] = [
            d["x-amazon-apigateway-authorizer"]["providerARNs"] for d in swagger["securityDefinitions"].values()
        ]
        print(json.dumps(out))
        """
    )
    env = {k: v for k, v in deploy_step.chalice_environment(REGION).items() if k not in CONTRACT_SECTION_6}
    env.pop("COGNITO_USER_POOL_ARN", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    graph = json.loads(result.stdout)
    # THEN each function has its own role and hand-written policy, bounded concurrency, VPC, X-Ray
    fns = graph["functions"]
    assert set(fns) == {
        "sluice-prod",
        "sluice-prod-load_writes",
        "sluice-prod-reconcile_writes",
        "sluice-prod-migrate",
    }
    assert fns["sluice-prod"]["policy"] == "policy-prod-api.json"
    assert fns["sluice-prod-load_writes"]["policy"] == "policy-prod-loader.json"
    assert fns["sluice-prod-reconcile_writes"]["policy"] == "policy-prod-reconciler.json"
    assert fns["sluice-prod-migrate"]["policy"] == "policy-prod-migrate.json"
    assert len({f["role"] for f in fns.values()}) == 4
    for fn in fns.values():
        assert fn["concurrency"] >= 1 and fn["xray"] is True
        assert fn["subnets"] == OUTPUTS["PrivateSubnetIds"].split(",")
        assert fn["groups"] == [OUTPUTS["LambdaSecurityGroupId"]]
        assert fn["env"]["WRITES_BUCKET"] == OUTPUTS["WritesBucketName"]
    assert graph["endpoint"] == "REGIONAL" and graph["stage"] == "api"
    # AND what app.py reads at import time is the stack's (chalice sets the stage's variables in
    # its own process before importing app.py), not the local fallback
    assert graph["notifications"] == [[OUTPUTS["WritesBucketName"], "writes/", "sluice-prod-load_writes"]]
    assert graph["authorizers"] == [[OUTPUTS["UserPoolArn"]]]


# -- stacks -------------------------------------------------------------------------------------
TEMPLATE = "Parameters:\n  Stage: {Type: String}\n  AlarmEmail: {Type: String, Default: ''}\nResources: {}\n"


def spec(template: str = TEMPLATE, **parameters: str) -> stacks.StackSpec:
    return stacks.StackSpec(
        name="sluice-prod-data",
        template_body=template,
        parameters={"Stage": "prod", **parameters},
        capabilities=("CAPABILITY_IAM",),
        termination_protection=True,
        tags={"Project": "sluice"},
    )


def described(
    status: str,
    outputs: dict[str, str] | None = None,
    name: str = "sluice-prod-data",
    parameters: tuple[str, ...] = ("Stage", "AlarmEmail"),
) -> dict[str, Any]:
    return {
        "Stacks": [
            {
                "StackName": name,
                "CreationTime": "2024-01-01T00:00:00Z",
                "StackStatus": status,
                "EnableTerminationProtection": name.endswith("-data"),
                "Parameters": [{"ParameterKey": key, "ParameterValue": "x"} for key in parameters],
                "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in (outputs or {}).items()],
            }
        ]
    }


def test_a_new_stack_is_created_unprotected_waited_for_and_only_then_protected():
    cfn = client("cloudformation")
    with Stubber(cfn) as stub:
        stub.add_client_error(
            "describe_stacks", "ValidationError", "Stack with id sluice-prod-data does not exist", 400
        )
        stub.add_response(
            "create_stack",
            {"StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/sluice-prod-data/1"},
            {
                "StackName": "sluice-prod-data",
                "TemplateBody": TEMPLATE,
                "Parameters": [{"ParameterKey": "Stage", "ParameterValue": "prod"}],
                "Capabilities": ["CAPABILITY_IAM"],
                "Tags": [{"Key": "Project", "Value": "sluice"}],
                # A protected stack could not roll back and be deleted after a failed create.
                "EnableTerminationProtection": False,
                "OnFailure": "ROLLBACK",
            },
        )
        stub.add_response("describe_stacks", described("CREATE_COMPLETE"), {"StackName": "sluice-prod-data"})
        stub.add_response(
            "update_termination_protection",
            {"StackId": "x"},
            {"StackName": "sluice-prod-data", "EnableTerminationProtection": True},
        )
        stub.add_response(
            "describe_stacks", described("CREATE_COMPLETE", {"A": "1"}), {"StackName": "sluice-prod-data"}
        )
        assert stacks.deploy(cfn, spec(), log=lambda _: None) == {"A": "1"}
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    "previous",
    [
        ("Stage", "AlarmEmail"),
        # a parameter the template of this release no longer declares (the edge stack's
        # ReadCacheTtlSeconds, say): not passed again, or CloudFormation refuses the update
        ("Stage", "AlarmEmail", "ReadCacheTtlSeconds"),
    ],
)
def test_no_updates_is_fine_and_the_declared_parameters_keep_their_values(previous):
    cfn = client("cloudformation")
    with Stubber(cfn) as stub:
        stub.add_response(
            "describe_stacks",
            described("UPDATE_COMPLETE", {"A": "1"}, parameters=previous),
            {"StackName": "sluice-prod-data"},
        )
        stub.add_client_error(
            "update_stack",
            "ValidationError",
            "No updates are to be performed.",
            400,
            expected_params={
                "StackName": "sluice-prod-data",
                "TemplateBody": TEMPLATE,
                "Parameters": [
                    {"ParameterKey": "Stage", "ParameterValue": "prod"},
                    {"ParameterKey": "AlarmEmail", "UsePreviousValue": True},
                ],
                "Capabilities": ["CAPABILITY_IAM"],
                "Tags": [{"Key": "Project", "Value": "sluice"}],
            },
        )
        assert stacks.deploy(cfn, spec(), log=lambda _: None) == {"A": "1"}
        stub.assert_no_pending_responses()


def test_a_stack_whose_creation_failed_is_reported():
    cfn = client("cloudformation")
    with Stubber(cfn) as stub:
        stub.add_response("describe_stacks", described("ROLLBACK_COMPLETE"), {"StackName": "sluice-prod-data"})
        with pytest.raises(stacks.StackError) as raised:
            stacks.deploy(cfn, spec(), log=lambda _: None)
    message = str(raised.value)
    # The commands that work: nothing is protected yet, nothing retained blocks the retry.
    assert "aws cloudformation delete-stack --stack-name sluice-prod-data" in message
    assert "aws cloudformation wait stack-delete-complete --stack-name sluice-prod-data" in message
    assert "update-termination-protection" not in message and "deletion-protection" not in message


def test_a_failed_first_creation_prints_the_commands_that_recover_it():
    cfn = client("cloudformation")
    failed = {
        "StackEvents": [
            {
                "StackId": "x",
                "EventId": "1",
                "StackName": "sluice-prod-data",
                "LogicalResourceId": "WritesBucket",
                "ResourceStatus": "CREATE_FAILED",
                "ResourceStatusReason": "boom",
                "Timestamp": "2024-01-01T00:00:00Z",
            }
        ]
    }
    with Stubber(cfn) as stub:
        stub.add_client_error(
            "describe_stacks", "ValidationError", "Stack with id sluice-prod-data does not exist", 400
        )
        stub.add_response("create_stack", {"StackId": "x"}, None)
        stub.add_response("describe_stacks", described("ROLLBACK_COMPLETE"), {"StackName": "sluice-prod-data"})
        stub.add_response("describe_stack_events", failed, {"StackName": "sluice-prod-data"})
        # No update_termination_protection is stubbed: a call to it would fail this test.
        with pytest.raises(stacks.StackError) as raised:
            stacks.deploy(cfn, spec(), log=lambda _: None)
        stub.assert_no_pending_responses()
    message = str(raised.value)
    assert "WritesBucket: boom" in message
    assert "aws cloudformation delete-stack --stack-name sluice-prod-data" in message


class StackCalls:
    """Records what CreateStack and UpdateStack were sent, and answers UpdateTerminationProtection
    (moto does not implement it)."""

    def __init__(self, session: Any) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        for operation in ("CreateStack", "UpdateStack"):
            session.events.register(f"before-call.cloudformation.{operation}", self.record)
        session.events.register("before-call.cloudformation.UpdateTerminationProtection", self.protect)

    def record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.sent.append((model.name, dict(params["body"])))

    def protect(self, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        return AWSResponse("", 200, {}, None), {}


def infra_context(session: Any, project: Path, lines: list[str]) -> deploy_step.Context:
    from deploy import origin_secret

    return deploy_step.Context(
        session=session,
        options=deploy_step.Options(project_dir=project),
        log=lines.append,
        app_name="sluice",
        api_stage="api",
        region=REGION,
        account_id=ACCOUNT,
        offline=False,
        sizes=PROD,
        origin=origin_secret.OriginSecret(current="c" * 43),
    )


def test_a_data_stack_over_the_inline_limit_is_created_and_protected_from_its_template_in_s3(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # GIVEN a project whose data.yaml has grown past CloudFormation's inline limit (the emulated
    # deploy's stand-in data stack, which moto can create, padded)
    project = copy_project(tmp_path / "project")
    standin = (ROOT / "tests" / "deploy" / "standin" / "data.yaml").read_text()
    padding = "# " + "x" * 78 + "\n"
    padded = standin + padding * (stacks.TEMPLATE_BODY_LIMIT // len(padding) + 1)
    assert len(padded.encode()) > stacks.TEMPLATE_BODY_LIMIT
    (project / "infrastructure" / "data.yaml").write_text(padded)
    lines: list[str] = []
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        calls = StackCalls(session)
        ctx = infra_context(session, project, lines)

        # WHEN the real step creates the stack, then runs again over the existing one
        deploy_step.step_data_stack(ctx)
        created_outputs = dict(ctx.outputs)
        deploy_step.step_data_stack(ctx)

        bucket = f"sluice-prod-templates-{ACCOUNT}-{REGION}"
        stored = session.client("s3").list_objects_v2(Bucket=bucket)["Contents"]
        block = session.client("s3").get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]

    # THEN the creation, the protection update after it and the later update all name the
    # template by URL; none sends the body inline
    assert [name for name, _ in calls.sent] == ["CreateStack", "UpdateStack", "UpdateStack"]
    for _, body in calls.sent:
        assert "TemplateBody" not in body
        assert body["TemplateURL"].startswith(f"https://{bucket}.s3.{REGION}.amazonaws.com/sluice-prod-data/")
    protection = calls.sent[1][1]
    assert "DatabaseDeletionProtection" in json.dumps(protection) and "true" in json.dumps(protection)
    assert created_outputs["WritesBucketName"] == f"sluice-prod-writes-{ACCOUNT}-{REGION}"
    (template,) = stored  # one object: the same template, addressed by its SHA-256
    assert template["Size"] == len(padded.encode())
    assert all(block.values())


def test_every_stack_goes_through_s3_even_a_small_one(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    small = stacks.StackSpec(
        name="sluice-prod-edge",
        template_body="Resources:\n  Queue:\n    Type: AWS::SQS::Queue\nOutputs:\n  Q:\n    Value: !Ref Queue\n",
        parameters={},
    )
    assert not small.too_large
    lines: list[str] = []
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        calls = StackCalls(session)
        ctx = infra_context(session, tmp_path, lines)
        outputs = deploy_step.stack_step(ctx, session.client("cloudformation", region_name="us-east-1"), small)
    assert outputs is not None and outputs["Q"]
    ((name, body),) = calls.sent
    assert name == "CreateStack" and "TemplateBody" not in body
    assert body["TemplateURL"].startswith(f"https://sluice-prod-templates-{ACCOUNT}-us-east-1.s3.us-east-1.")


def test_a_template_bucket_owned_by_another_account_is_never_written_to():
    s3 = client("s3")
    spec = stacks.StackSpec(name="sluice-prod-data", template_body="Resources: {}", parameters={})
    with Stubber(s3) as stub:
        stub.add_client_error(
            "head_bucket",
            "403",
            http_status_code=403,
            expected_params={"Bucket": "b", "ExpectedBucketOwner": ACCOUNT},
        )
        # No create_bucket and no put_object are stubbed: either call would fail this test.
        with pytest.raises(stacks.StackError, match="not this account's"):
            stacks.upload_template(s3, "b", REGION, spec, ACCOUNT)
        stub.assert_no_pending_responses()


# -- Chalice's record, kept in the account ----------------------------------------------------------
def test_chalice_record_round_trips_through_ssm(tmp_path):
    from deploy import state

    path = state.record_path(tmp_path, "prod")
    name = state.parameter_name("sluice", "prod")
    record = {"schema_version": "2.0", "resources": [{"name": "rest_api", "rest_api_id": API_ID}]}
    ssm = client("ssm")
    with Stubber(ssm) as stub:
        # Nothing anywhere before the first deploy: nothing restored, nothing saved.
        stub.add_client_error("get_parameter", "ParameterNotFound", expected_params={"Name": name})
        assert state.restore(ssm, name, path) is False and not path.exists()
        assert state.save(ssm, name, path) is False
        # Another machine deployed since: its record replaces the older local one.
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"resources": []}))
        os.utime(path, (1_700_000_000, 1_700_000_000))
        later = datetime.fromtimestamp(1_700_000_100, tz=UTC)
        parameter = {"Name": name, "Value": json.dumps(record), "LastModifiedDate": later}
        stub.add_response("get_parameter", {"Parameter": parameter}, {"Name": name})
        assert state.restore(ssm, name, path) is True
        assert json.loads(path.read_text()) == record
        # A chalice deploy ran here after that: the local record is newer and stays.
        path.write_text(json.dumps({"resources": [{"name": "by_hand"}]}))
        os.utime(path, (1_700_000_200, 1_700_000_200))
        stub.add_response("get_parameter", {"Parameter": parameter}, {"Name": name})
        assert state.restore(ssm, name, path) is False
        assert "by_hand" in path.read_text()
        path.write_text(json.dumps(record))
        stub.add_response(
            "put_parameter",
            {"Version": 2},
            {
                "Name": name,
                "Value": json.dumps(record, separators=(",", ":")),
                "Type": "String",
                "Overwrite": True,
                "Tier": "Intelligent-Tiering",
                "Description": ANY,
            },
        )
        assert state.save(ssm, name, path) is True
        stub.assert_no_pending_responses()


# -- the whole run, against fakes -----------------------------------------------------------------
class FakeSession:
    region_name = REGION

    def __init__(self, clients: dict[tuple[str, str], Any]) -> None:
        self.clients = clients

    def client(self, service: str, region_name: str | None = None) -> Any:
        return self.clients[(service, region_name or REGION)]

    def get_partition_for_region(self, region: str) -> str:
        return "aws"


MIGRATE_ARN = "arn:aws:lambda:us-east-1:123456789012:function:sluice-prod-migrate"


def test_dry_run_on_an_empty_account_changes_nothing(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    project = copy_project(tmp_path / "project")
    lines: list[str] = []

    def runner(*_: Any, **__: Any) -> None:
        raise AssertionError("a dry run must not run chalice deploy")

    with mock_aws():
        session = boto3.Session(region_name=REGION)
        deploy_step.run(
            session, deploy_step.Options(dry_run=True, project_dir=project), runner=runner, log=lines.append
        )
        stacks_left = session.client("cloudformation").describe_stacks()["Stacks"]
    assert stacks_left == []
    text = "\n".join(lines)
    assert "would create stack sluice-prod-data" in text
    assert "would run" in text and "deploy --stage prod" in text
    assert "<FirehoseStreamName>" in text  # placeholders shown where outputs will go
    assert "GET /todos/{todo_id}: throttle 500/s burst 1000, not cached by API Gateway" in text
    assert "would write .chalice/config.json (stage prod)" in text
    assert json.loads((project / ".chalice" / "config.json").read_text()) == json.loads(
        committed_config_text()
    )  # a dry run writes nothing


@pytest.mark.parametrize("bundle", [None, b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"])
def test_an_unusable_ca_bundle_stops_the_deploy_before_any_aws_call(tmp_path, monkeypatch, bundle):
    import boto3
    from moto import mock_aws

    from deploy import tls

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    project = copy_project(tmp_path / "project")
    path = project / tls.BUNDLE_NAMES["rds"]
    if bundle is None:
        path.unlink()
    else:
        path.write_bytes(bundle)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        with pytest.raises(tls.BundleMissing, match="rds-global-bundle.pem"):
            deploy_step.run(session, deploy_step.Options(project_dir=project), log=lambda _: None)
        # Nothing was made: no origin secret, no stack, no template bucket.
        assert session.client("ssm").describe_parameters()["Parameters"] == []
        assert session.client("cloudformation").describe_stacks()["Stacks"] == []
        assert session.client("s3").list_buckets()["Buckets"] == []


def test_dry_run_without_credentials_plans_offline(tmp_path):
    from botocore.exceptions import NoCredentialsError

    class NoCredentials:
        def get_caller_identity(self) -> dict[str, str]:
            raise NoCredentialsError()

    project = copy_project(tmp_path / "project")
    session = FakeSession({("sts", REGION): NoCredentials(), ("apigateway", REGION): object()})
    lines: list[str] = []
    deploy_step.run(session, deploy_step.Options(dry_run=True, project_dir=project), log=lines.append)
    assert "no AWS credentials" in "\n".join(lines)
    with pytest.raises(NoCredentialsError):  # a real run never guesses
        deploy_step.run(session, deploy_step.Options(project_dir=project), log=lines.append)


def test_the_cli_reports_a_bad_parameter(capsys):
    assert deploy_step.main(["--parameter", "novalue"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err


def test_the_edge_stack_notifies_the_data_stacks_alarm_address_unless_told_otherwise(tmp_path, monkeypatch):
    sent: list[stacks.StackSpec] = []
    monkeypatch.setattr(deploy_step, "stack_step", lambda ctx, cfn, spec: sent.append(spec) or {})
    ctx = infra_context(
        FakeSession({("cloudformation", "us-east-1"): object()}), copy_project(tmp_path / "project"), []
    )
    ctx.outputs = {"AlarmEmail": "ops@example.com"}
    deploy_step.step_edge_stack(ctx, "abcdefghij")
    ctx.options.edge_parameters = {"AlarmEmail": "edge@example.com"}
    deploy_step.step_edge_stack(ctx, "abcdefghij")
    ctx.outputs = {}
    ctx.options.edge_parameters = {}
    deploy_step.step_edge_stack(ctx, "abcdefghij")
    assert [s.parameters["AlarmEmail"] for s in sent] == ["ops@example.com", "edge@example.com", ""]
