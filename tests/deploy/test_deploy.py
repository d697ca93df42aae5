"""The deploy step's AWS calls, checked without an AWS account.

Botocore's Stubber answers real clients, so every request the deploy step builds is validated
against the service's model; moto stands in where a whole service is needed (the API stage,
the dry run on an empty account); a small stateful fake shows what a second run does after a
first one, and after `chalice deploy` has reset the API in between.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from deploy import apigateway, functions, render, stacks
from deploy import deploy as deploy_step
from deploy.apigateway import GATEWAY_RESPONSES, StageSettings, Throttle
from deploy.routes import AUTHORIZATION, IF_NONE_MATCH, RouteError, routes_of
from tests.deploy.conftest import ACCOUNT, OUTPUTS, REGION, ROOT, FakeApiGateway, client

API_ID = "a1b2c3d4e5"
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
    # GET /todos and GET /users/{sub}/todos both page through the shared _list helper.
    # min_version is read (through _min_version) by every GET that takes it, so it is in their
    # stage cache keys: a read asking for a newer version is never answered from an older entry.
    # The admin route does not take it (an unknown parameter there, ignored).
    assert by_view["list_todos"].query_params == ("cursor", "limit", "min_version", "state")
    assert by_view["admin_list_todos"].query_params == ("cursor", "limit", "state")
    assert by_view["get_todo"].query_params == ("min_version",)
    assert by_view["get_me"].query_params == ("min_version",)


def write_module(tmp_path: Path, name: str, source: str) -> Any:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_a_new_get_route_gets_its_cache_key(tmp_path):
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
    routes = routes_of(module)
    resources = resource_ids_for(routes)
    apigw = client("apigateway")
    # WHEN the deploy step plans the cache keys THEN the new GET gets them all
    with Stubber(apigw) as stub:
        (route,) = [r for r in routes if r.is_read]
        where = {"restApiId": API_ID, "resourceId": resources[route.path], "httpMethod": "GET"}
        stub.add_response("get_method", chalice_method(route), where)
        calls = apigateway.cache_key_calls(apigw, API_ID, routes, resources)
    keys = [op["path"].removeprefix("/cacheKeyParameters/") for op in calls[1].params["patchOperations"]]
    assert calls[1].operation == "update_integration"
    assert keys == [
        AUTHORIZATION,
        IF_NONE_MATCH,
        "method.request.path.thing_id",
        "method.request.querystring.after",
        "method.request.querystring.q",
    ]


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


# -- cache keys ---------------------------------------------------------------------------------
def test_every_get_route_gets_authorization_and_its_path_parameters_in_the_cache_key(app_module):
    routes = routes_of(app_module)
    resources = resource_ids_for(routes)
    apigw = client("apigateway")
    with Stubber(apigw) as stub:
        for route in [r for r in routes if r.is_read]:
            where = {"restApiId": API_ID, "resourceId": resources[route.path], "httpMethod": "GET"}
            stub.add_response("get_method", chalice_method(route), where)
        calls = apigateway.cache_key_calls(apigw, API_ID, routes, resources)
        stub.assert_no_pending_responses()
    by_resource: dict[tuple[str, str], list[str]] = {}
    for call in calls:
        assert call.params["httpMethod"] == "GET"
        names = [op["path"].split("/", 2)[2] for op in call.params["patchOperations"]]
        by_resource[(call.params["resourceId"], call.operation)] = names
    # Derived from the app's route table here, independently of deploy.routes.
    for path, path_params in get_routes_from_app(app_module.app):
        keyed = by_resource[(resources[path], "update_integration")]
        assert AUTHORIZATION in keyed and IF_NONE_MATCH in keyed, path
        for name in path_params:
            assert f"method.request.path.{name}" in keyed, path
        declared = by_resource[(resources[path], "update_method")]
        # Chalice already declares the path parameters; the headers (and queries) are added.
        assert AUTHORIZATION in declared and not any(n.startswith("method.request.path.") for n in declared)
    list_keys = by_resource[(resources["/todos"], "update_integration")]
    assert {f"method.request.querystring.{q}" for q in ("limit", "cursor", "state", "min_version")} <= set(list_keys)


def test_method_request_parameters_are_optional_headers_and_required_paths(app_module):
    routes = [r for r in routes_of(app_module) if r.path == "/todos/{todo_id}"]
    resources = resource_ids_for(routes)
    apigw = client("apigateway")
    with Stubber(apigw) as stub:
        where = {"restApiId": API_ID, "resourceId": resources["/todos/{todo_id}"], "httpMethod": "GET"}
        stub.add_response("get_method", {"httpMethod": "GET", "methodIntegration": {}}, where)
        calls = apigateway.cache_key_calls(apigw, API_ID, routes, resources)
    declared = {op["path"]: op["value"] for op in calls[0].params["patchOperations"]}
    assert declared == {
        f"/requestParameters/{AUTHORIZATION}": "false",
        f"/requestParameters/{IF_NONE_MATCH}": "false",
        "/requestParameters/method.request.path.todo_id": "true",
        "/requestParameters/method.request.querystring.min_version": "false",
    }


def test_a_get_route_missing_from_the_deployed_api_stops_the_deploy(app_module):
    routes = routes_of(app_module)
    resources = resource_ids_for(routes)
    del resources["/me"]
    with pytest.raises(apigateway.ApiShapeError, match="/me"):
        apigateway.cache_key_calls(client("apigateway"), API_ID, routes, resources)


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
def test_reads_and_writes_are_throttled_separately(app_module):
    settings = StageSettings()
    routes = routes_of(app_module)
    wanted = apigateway.desired_method_settings(routes, settings)
    for route in routes:
        entry = wanted[apigateway.method_key(route)]
        if (route.method, route.path) in settings.overrides:
            expected = settings.overrides[(route.method, route.path)]
        else:
            expected = settings.reads if route.method == "GET" else settings.writes
        assert (entry["throttlingRateLimit"], entry["throttlingBurstLimit"]) == (expected.rate, expected.burst)
        assert entry["cachingEnabled"] is (route.method == "GET"), route
        assert entry["requireAuthorizationForCacheControl"] is True
        assert entry["cacheDataEncrypted"] is True
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
            apigw.put_method(
                restApiId=api, resourceId=ids[route.path], httpMethod=route.method, authorizationType="NONE"
            )
            apigw.put_integration(restApiId=api, resourceId=ids[route.path], httpMethod=route.method, type="MOCK")
        apigw.create_deployment(restApiId=api, stageName="api")
        assert apigateway.resource_ids(apigw, api) == ids  # every resource, intermediate ones too

        apigateway.apply(apigw, apigateway.stage_calls(apigw, api, "api", routes, settings))
        stage = apigw.get_stage(restApiId=api, stageName="api")
        assert stage["cacheClusterEnabled"] is True and stage["cacheClusterSize"] == settings.cache_size
        got = stage["methodSettings"]
        assert got["~1todos~1{todo_id}/GET"]["cachingEnabled"] is True
        assert got["~1todos~1{todo_id}/GET"]["throttlingRateLimit"] == 321.0
        assert got["~1todos~1{todo_id}/PUT"]["cachingEnabled"] is False
        assert got["~1todos~1{todo_id}/PUT"]["throttlingBurstLimit"] == 34
        assert got["*/*"]["cachingEnabled"] is False
        assert got["~1me/GET"]["unauthorizedCacheControlHeaderStrategy"] == "SUCCEED_WITH_RESPONSE_HEADER"
        # Run again against what the first run left: nothing to do.
        assert apigateway.stage_calls(apigw, api, "api", routes, settings) == []


def test_stage_patch_operations_are_chunked(app_module):
    routes = routes_of(app_module)
    apigw = client("apigateway")
    with Stubber(apigw) as stub:
        stub.add_response(
            "get_stage", {"stageName": "api", "cacheClusterEnabled": False}, {"restApiId": API_ID, "stageName": "api"}
        )
        calls = apigateway.stage_calls(apigw, API_ID, "api", routes, StageSettings())
    assert len(calls) >= 2  # more operations than one call may carry
    ops = [op for c in calls for op in c.params["patchOperations"]]
    assert all(len(c.params["patchOperations"]) <= apigateway.MAX_PATCH_OPERATIONS for c in calls)
    assert {"op": "replace", "path": "/cacheClusterEnabled", "value": "true"} in ops
    assert {"op": "replace", "path": "/*/*/caching/enabled", "value": "false"} in ops
    assert {"op": "replace", "path": "/~1todos/GET/caching/requireAuthorizationForCacheControl", "value": "true"} in ops
    assert not any(c.operation == "flush_stage_cache" for c in calls)  # no cache existed yet


def test_the_cache_guard_switches_caching_off_everywhere():
    apigw = client("apigateway")
    stage = {
        "stageName": "api",
        "cacheClusterEnabled": True,
        "methodSettings": {
            "*/*": {"cachingEnabled": False},
            "~1todos/GET": {"cachingEnabled": True},
            "~1me/GET": {"cachingEnabled": True},
            "~1me/PUT": {"cachingEnabled": False},
        },
    }
    with Stubber(apigw) as stub:
        stub.add_response("get_stage", stage, {"restApiId": API_ID, "stageName": "api"})
        (call,) = apigateway.cache_guard_calls(apigw, API_ID, "api")
    assert call.params["patchOperations"] == [
        {"op": "replace", "path": "/~1me/GET/caching/enabled", "value": "false"},
        {"op": "replace", "path": "/~1todos/GET/caching/enabled", "value": "false"},
    ]


def test_the_cache_guard_covers_the_implicit_get_default():
    apigw = client("apigateway")
    with Stubber(apigw) as stub:
        stub.add_response(
            "get_stage", {"stageName": "api", "cacheClusterEnabled": True}, {"restApiId": API_ID, "stageName": "api"}
        )
        (call,) = apigateway.cache_guard_calls(apigw, API_ID, "api")
    assert call.params["patchOperations"] == [{"op": "replace", "path": "/*/*/caching/enabled", "value": "false"}]


# -- the whole API configuration, twice ---------------------------------------------------------
def test_second_run_changes_nothing_and_a_chalice_redeploy_is_repaired(app_module):
    routes = routes_of(app_module)
    fake = FakeApiGateway(routes)
    settings = StageSettings()
    log: list[str] = []

    first = apigateway.configure_api(fake, API_ID, "api", routes, settings, log=log.append)
    assert fake.deployments == 1 and [c.operation for c in first].count("create_deployment") == 1
    # Caching is switched on only after the deployment that holds the cache keys.
    order = [c.operation for c in first]
    assert order.index("create_deployment") < order.index("update_stage")

    fake.calls.clear()
    second = apigateway.configure_api(fake, API_ID, "api", routes, settings, log=log.append)
    assert second == []
    assert set(fake.calls) == {"get_method"}  # reads only

    # chalice deploy resets methods and gateway responses; the guard ran before it.
    apigateway.apply(fake, apigateway.cache_guard_calls(fake, API_ID, "api"))
    assert not any(s["cachingEnabled"] for s in fake.stage["methodSettings"].values())
    fake.chalice_redeploy()
    third = apigateway.configure_api(fake, API_ID, "api", routes, settings, log=log.append)
    operations = [c.operation for c in third]
    assert "create_deployment" in operations and operations[-1] == "flush_stage_cache"
    for route in [r for r in routes if r.is_read]:
        method = fake.methods[(fake.resources[route.path], "GET")]
        assert set(route.cache_key_parameters()) == set(method["methodIntegration"]["cacheKeyParameters"])
        assert fake.stage["methodSettings"][apigateway.method_key(route)]["cachingEnabled"] is True


def test_dry_run_plans_without_changing(app_module):
    routes = routes_of(app_module)
    fake = FakeApiGateway(routes)
    planned = apigateway.configure_api(fake, API_ID, "api", routes, StageSettings(), dry_run=True, log=lambda _: None)
    assert planned and fake.deployments == 0 and fake.stage["methodSettings"] == {}
    assert set(fake.calls) == {"get_method"}


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
        "DATABASE_URL": f"mysql://{OUTPUTS['ProxyEndpoint']}:3306/sluice?ssl=required",
        "DATABASE_SECRET_ARN": OUTPUTS["DatabaseSecretArn"],
        "REPLICA_URLS": ",".join(f"mysql://{host}:3306/sluice?ssl=required" for host in replicas),
        "COGNITO_USER_POOL_ARN": OUTPUTS["UserPoolArn"],
    }
    assert prod["subnet_ids"] == OUTPUTS["PrivateSubnetIds"].split(",")
    assert prod["security_group_ids"] == [OUTPUTS["LambdaSecurityGroupId"]]
    assert "${" not in json.dumps(prod).replace("${...}", "")
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


def test_the_rendered_project_is_what_chalice_deploys(tmp_path, config, variables, outputs):
    # GIVEN the rendered build copy
    rendered = render.render_stage_config(config, "prod", variables)
    policies = render.render_policies(ROOT, config, "prod", variables)
    project = tmp_path / "project"
    for entry in ("app.py", "requirements.txt", "chalicelib"):
        source = ROOT / entry
        (project / entry).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, project / entry)
        else:
            (project / entry).write_bytes(source.read_bytes())
    (project / ".chalice").mkdir()
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    build = render.build_project(project, tmp_path / "build", rendered, policies)
    assert (build / ".chalice" / "deployed").resolve() == (project / ".chalice" / "deployed").resolve()
    # WHEN Chalice builds its deployment graph there, in the environment `chalice deploy` gets
    script = textwrap.dedent(
        """
        import json
        from chalice.cli.factory import CLIFactory
        from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
        from chalice.deploy.validate import validate_configuration
        config = CLIFactory(".").create_config_obj("prod")
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
    env = deploy_step.chalice_environment(outputs, REGION)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=build, env=env, capture_output=True, text=True, check=False
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
    # AND what app.py reads at import time is the stack's, not the local fallback
    assert graph["notifications"] == [[OUTPUTS["WritesBucketName"], "writes/", "sluice-prod-load_writes"]]
    assert graph["authorizers"] == [[OUTPUTS["UserPoolArn"]]]


# -- stacks -------------------------------------------------------------------------------------
def spec(**parameters: str) -> stacks.StackSpec:
    return stacks.StackSpec(
        name="sluice-prod-data",
        template_body="Resources: {}",
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


def test_a_new_stack_is_created_protected_and_waited_for():
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
                "TemplateBody": "Resources: {}",
                "Parameters": [{"ParameterKey": "Stage", "ParameterValue": "prod"}],
                "Capabilities": ["CAPABILITY_IAM"],
                "Tags": [{"Key": "Project", "Value": "sluice"}],
                "EnableTerminationProtection": True,
            },
        )
        stub.add_response("describe_stacks", described("CREATE_COMPLETE"), {"StackName": "sluice-prod-data"})
        stub.add_response(
            "describe_stacks", described("CREATE_COMPLETE", {"A": "1"}), {"StackName": "sluice-prod-data"}
        )
        assert stacks.deploy(cfn, spec(), log=lambda _: None) == {"A": "1"}
        stub.assert_no_pending_responses()


def test_no_updates_is_fine_and_other_parameters_keep_their_values():
    cfn = client("cloudformation")
    with Stubber(cfn) as stub:
        stub.add_response(
            "describe_stacks", described("UPDATE_COMPLETE", {"A": "1"}), {"StackName": "sluice-prod-data"}
        )
        stub.add_client_error(
            "update_stack",
            "ValidationError",
            "No updates are to be performed.",
            400,
            expected_params={
                "StackName": "sluice-prod-data",
                "TemplateBody": "Resources: {}",
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
        with pytest.raises(stacks.StackError, match="delete-stack"):
            stacks.deploy(cfn, spec(), log=lambda _: None)


def test_the_data_template_fits_in_a_request():
    body = (ROOT / "infrastructure" / "data.yaml").read_bytes()
    assert len(body) <= stacks.TEMPLATE_BODY_LIMIT


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
        # Another machine deployed: its record replaces a stale local one.
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"resources": []}))
        stub.add_response("get_parameter", {"Parameter": {"Name": name, "Value": json.dumps(record)}}, {"Name": name})
        assert state.restore(ssm, name, path) is True
        assert json.loads(path.read_text()) == record
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


def test_a_run_deploys_in_order_and_configures_after_chalice(tmp_path, monkeypatch, app_module, config):
    # GIVEN a project whose API exists (Chalice recorded it) and stacks that are up to date
    project = tmp_path / "project"
    (project / ".chalice" / "deployed").mkdir(parents=True)
    for entry in (".chalice/config.json", *[f".chalice/{n}" for n in render.policy_files(config, "prod").values()]):
        (project / entry).write_bytes((ROOT / entry).read_bytes())
    (project / "infrastructure").mkdir()
    for name in ("data.yaml", "edge.yaml"):
        (project / "infrastructure" / name).write_bytes((ROOT / "infrastructure" / name).read_bytes())
    (project / "app.py").write_text("# stand-in; the run imports the real app module\n")
    record = {
        "schema_version": "2.0",
        "backend": "api",
        "resources": [
            {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": API_ID},
            {
                "name": "api_handler",
                "resource_type": "lambda_function",
                "lambda_arn": "arn:aws:lambda:::function:sluice-prod",
            },
            {"name": "load_writes", "resource_type": "lambda_function", "lambda_arn": LOADER_ARN},
            {"name": "reconcile_writes", "resource_type": "lambda_function", "lambda_arn": "x"},
            {"name": "migrate", "resource_type": "lambda_function", "lambda_arn": MIGRATE_ARN},
        ],
    }
    (project / ".chalice" / "deployed" / "prod.json").write_text(json.dumps(record))
    routes = routes_of(app_module)
    fake_api = FakeApiGateway(routes)
    fake_api.stage.update(cacheClusterEnabled=True, cacheClusterStatus="AVAILABLE")
    fake_api.stage["methodSettings"]["~1todos/GET"] = {"cachingEnabled": True}
    events: list[str] = []

    cfn, edge, sts, lam, ssm = (
        client("cloudformation"),
        client("cloudformation", "us-east-1"),
        client("sts"),
        client("lambda"),
        client("ssm"),
    )
    data_stack = described("UPDATE_COMPLETE", OUTPUTS)
    edge_stack = described(
        "UPDATE_COMPLETE",
        {"DistributionDomainName": "d111.cloudfront.net"},
        name="sluice-prod-edge",
        parameters=("Stage", "ApiId", "ApiRegion", "ApiStage", "RateLimit"),
    )
    stubs = [Stubber(c) for c in (cfn, edge, sts, lam, ssm)]
    s_cfn, s_edge, s_sts, s_lam, s_ssm = stubs
    with ExitStack() as active:
        for stub in stubs:
            active.enter_context(stub)
        # Chalice's record is on this machine and not yet in the account: it is kept there after.
        s_ssm.add_client_error(
            "get_parameter", "ParameterNotFound", expected_params={"Name": "/sluice/prod/chalice-deployed"}
        )
        s_ssm.add_response(
            "put_parameter",
            {"Version": 1},
            {
                "Name": "/sluice/prod/chalice-deployed",
                "Value": json.dumps(record, separators=(",", ":")),
                "Type": "String",
                "Overwrite": True,
                "Tier": "Intelligent-Tiering",
                "Description": ANY,
            },
        )
        s_sts.add_response("get_caller_identity", {"Account": ACCOUNT, "Arn": "arn:aws:iam::1:user/x", "UserId": "x"})
        s_cfn.add_response("describe_stacks", data_stack, {"StackName": "sluice-prod-data"})
        s_cfn.add_client_error("update_stack", "ValidationError", "No updates are to be performed.", 400)
        # the schema is migrated from inside the VPC before the API is configured
        s_lam.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(b'{"applied": [1]}'), 16)},
            {"FunctionName": MIGRATE_ARN, "InvocationType": "RequestResponse", "Payload": b"{}"},
        )
        s_lam.add_client_error("get_function_event_invoke_config", "ResourceNotFoundException")
        s_lam.add_response(
            "put_function_event_invoke_config",
            {},
            {
                "FunctionName": LOADER_ARN,
                "MaximumRetryAttempts": 2,
                "MaximumEventAgeInSeconds": 21600,
                "DestinationConfig": {"OnFailure": {"Destination": OUTPUTS["LoaderFailureQueueArn"]}},
            },
        )
        s_edge.add_response("describe_stacks", edge_stack, {"StackName": "sluice-prod-edge"})
        s_edge.add_client_error(
            "update_stack",
            "ValidationError",
            "No updates are to be performed.",
            400,
            expected_params={
                "StackName": "sluice-prod-edge",
                "TemplateBody": ANY,
                "Parameters": [
                    {"ParameterKey": "ApiId", "ParameterValue": API_ID},
                    {"ParameterKey": "ApiRegion", "ParameterValue": REGION},
                    {"ParameterKey": "ApiStage", "ParameterValue": "api"},
                    {"ParameterKey": "Stage", "ParameterValue": "prod"},
                    {"ParameterKey": "RateLimit", "UsePreviousValue": True},  # the operator's choice stays
                ],
                "Capabilities": [],
                "Tags": ANY,
            },
        )
        session = FakeSession(
            {
                ("cloudformation", REGION): cfn,
                ("cloudformation", "us-east-1"): edge,
                ("sts", REGION): sts,
                ("lambda", REGION): lam,
                ("ssm", REGION): ssm,
                ("apigateway", REGION): fake_api,
            }
        )

        def runner(command: list[str], env: dict[str, str], check: bool) -> None:
            events.append("chalice deploy")
            # The guard ran first: nothing is cached while Chalice's keyless deployment is live.
            assert not any(s["cachingEnabled"] for s in fake_api.stage["methodSettings"].values())
            assert env["WRITES_BUCKET"] == OUTPUTS["WritesBucketName"]
            assert command[-2:] == ["--stage", "prod"] and "--project-dir" in command
            fake_api.chalice_redeploy()

        options = deploy_step.Options(stage="prod", project_dir=project)
        monkeypatch.setattr(deploy_step, "load_app", lambda _: app_module)
        deploy_step.run(session, options, runner=runner, log=events.append)
        for stub in stubs:
            stub.assert_no_pending_responses()
    # THEN chalice ran once, and the API was configured after it
    assert events.count("chalice deploy") == 1
    assert events.index("chalice deploy") < next(i for i, e in enumerate(events) if e.startswith("create_deployment"))
    for route in [r for r in routes if r.is_read]:
        method = fake_api.methods[(fake_api.resources[route.path], "GET")]
        assert AUTHORIZATION in method["methodIntegration"]["cacheKeyParameters"]
    assert fake_api.flushes == 1
    rendered = json.loads((project / "build" / "deploy-prod" / ".chalice" / "config.json").read_text())
    assert rendered["stages"]["prod"]["environment_variables"]["FIREHOSE_STREAM"] == OUTPUTS["FirehoseStreamName"]
    assert json.loads((project / ".chalice" / "config.json").read_text()) == config  # the work tree is untouched


def test_dry_run_on_an_empty_account_changes_nothing(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    project = tmp_path / "project"
    for entry in (".chalice", "infrastructure"):
        shutil.copytree(ROOT / entry, project / entry, ignore=shutil.ignore_patterns("deployed", "deployments"))
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
    assert "GET /todos/{todo_id}: throttle" in text and "method.request.path.todo_id" in text


def test_dry_run_without_credentials_plans_offline(tmp_path):
    from botocore.exceptions import NoCredentialsError

    class NoCredentials:
        def get_caller_identity(self) -> dict[str, str]:
            raise NoCredentialsError()

    project = tmp_path / "project"
    for entry in (".chalice", "infrastructure"):
        shutil.copytree(ROOT / entry, project / entry, ignore=shutil.ignore_patterns("deployed", "deployments"))
    session = FakeSession({("sts", REGION): NoCredentials(), ("apigateway", REGION): object()})
    lines: list[str] = []
    deploy_step.run(session, deploy_step.Options(dry_run=True, project_dir=project), log=lines.append)
    assert "no AWS credentials" in "\n".join(lines)
    with pytest.raises(NoCredentialsError):  # a real run never guesses
        deploy_step.run(session, deploy_step.Options(project_dir=project), log=lines.append)


def test_the_cli_reports_a_bad_parameter(capsys):
    assert deploy_step.main(["--parameter", "novalue"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
