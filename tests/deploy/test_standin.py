"""The stand-ins of the emulated deploy (tests/deploy/standin/) stay small and true to AWS's side."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from cfnlint.decode.cfn_yaml import load as load_cfn_yaml

from tests.deploy.conftest import mock_method, replace_stage_settings

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "standin"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"standin_{name}", STANDIN / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stand_in_stacks_have_the_real_outputs_and_take_the_real_parameters():
    for name in ("data.yaml", "edge.yaml"):
        real = load_cfn_yaml(str(ROOT / "infrastructure" / name))
        standin = load_cfn_yaml(str(STANDIN / name))
        assert set(standin["Outputs"]) == set(real["Outputs"]), name
        # Every parameter the stand-in takes is one the real template takes (so what the deploy
        # step passes to one, it can pass to the other).
        assert set(standin["Parameters"]) <= set(real["Parameters"]), name
        for key, parameter in standin["Parameters"].items():
            assert bool(parameter.get("NoEcho")) == bool(real["Parameters"][key].get("NoEcho")), key


def test_the_parameters_the_deploy_step_passes_exist_in_both_data_templates():
    passed = {"Stage", "ApiName", "OriginVerifyCurrent", "OriginVerifyPrevious", "DatabaseDeletionProtection"}
    for path in (ROOT / "infrastructure" / "data.yaml", STANDIN / "data.yaml"):
        assert passed <= set(load_cfn_yaml(str(path))["Parameters"]), path
    edge_passed = {"Stage", "ApiId", "ApiRegion", "ApiStage", "OriginVerifyValue"}
    for path in (ROOT / "infrastructure" / "edge.yaml", STANDIN / "edge.yaml"):
        assert edge_passed <= set(load_cfn_yaml(str(path))["Parameters"]), path


def test_swagger_is_relabelled_openapi_3_with_its_paths_intact():
    site = load("sitecustomize")
    document = {
        "swagger": "2.0",
        "info": {"title": "sluice", "version": "1.0"},
        "paths": {"/todos": {"get": {"x-amazon-apigateway-integration": {"type": "aws_proxy"}}}},
        "securityDefinitions": {"users": {"type": "apiKey"}},
    }
    params = {"restApiId": "a", "mode": "overwrite", "failOnWarnings": True, "body": json.dumps(document).encode()}

    site.openapi3_body(params)

    sent = json.loads(params["body"])
    assert "swagger" not in sent and sent["openapi"] == "3.0.1"
    assert sent["paths"] == document["paths"]
    assert sent["securityDefinitions"] == document["securityDefinitions"]
    assert sent["info"]["description"] == ""
    assert "failOnWarnings" not in params and params["mode"] == "overwrite"
    already = {"body": json.dumps({"openapi": "3.0.1", "paths": {}}).encode()}
    before = dict(already)
    site.openapi3_body(already)
    assert already == before  # an OpenAPI 3 document goes as it is


def test_s3_filter_rule_names_are_sent_in_lower_case_only():
    site = load("sitecustomize")
    params = {
        "Bucket": "b",
        "NotificationConfiguration": {
            "LambdaFunctionConfigurations": [
                {
                    "LambdaFunctionArn": "arn",
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "writes/"}]}},
                }
            ]
        },
    }
    site.lowercase_filter_names(params)
    rules = params["NotificationConfiguration"]["LambdaFunctionConfigurations"][0]["Filter"]["Key"]["FilterRules"]
    assert rules == [{"Name": "prefix", "Value": "writes/"}]


def test_a_deployment_to_an_existing_stage_keeps_its_settings_as_api_gateway_does():
    import boto3
    from moto import mock_aws
    from moto.apigateway import models

    original = models.RestAPI.create_deployment
    imported = models.APIGatewayBackend.put_rest_api
    try:
        load("moto_server").install()
        with mock_aws():
            apigw = boto3.client("apigateway", region_name="eu-west-1")
            api = apigw.create_rest_api(name="x")["id"]
            root = apigw.get_resources(restApiId=api)["items"][0]["id"]
            mock_method(apigw, api, root, "GET")
            first = apigw.create_deployment(restApiId=api, stageName="api")["id"]
            replace_stage_settings(
                apigw, api, "api", {"/cacheClusterEnabled": "true", "/*/*/throttling/rateLimit": "7"}
            )
            second = apigw.create_deployment(restApiId=api, stageName="api")["id"]
            stage = apigw.get_stage(restApiId=api, stageName="api")
        assert second != first and stage["deploymentId"] == second
        assert stage["cacheClusterEnabled"] is True
        assert stage["methodSettings"]["*/*"]["throttlingRateLimit"] == 7.0
    finally:
        models.RestAPI.create_deployment = original
        models.APIGatewayBackend.put_rest_api = imported


def test_an_imported_document_sets_what_api_gateway_reads_from_it():
    """Gateway responses (all of them, on overwrite), declared parameters and cache keys."""
    import boto3
    from moto import mock_aws
    from moto.apigateway import models

    original = models.RestAPI.create_deployment
    imported = models.APIGatewayBackend.put_rest_api
    keys = ["method.request.header.Authorization", "method.request.path.thing_id", "method.request.querystring.q"]
    document = {
        "openapi": "3.0.1",
        "info": {"title": "x", "description": "", "version": "1"},
        "x-amazon-apigateway-gateway-responses": {
            "UNAUTHORIZED": {"responseTemplates": {"application/json": '{"error": "unauthorized"}'}},
            "MISSING_AUTHENTICATION_TOKEN": {"statusCode": "404"},
        },
        "paths": {
            "/things/{thing_id}": {
                "get": {
                    "parameters": [
                        {"name": "thing_id", "in": "path", "required": True, "type": "string"},
                        {"name": "Authorization", "in": "header", "required": False, "type": "string"},
                        {"name": "q", "in": "query", "required": False, "type": "string"},
                    ],
                    "x-amazon-apigateway-integration": {
                        "type": "aws_proxy",
                        "httpMethod": "POST",
                        "uri": "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:f/invocations",
                        "cacheKeyParameters": keys,
                    },
                }
            }
        },
    }
    try:
        load("moto_server").install()
        with mock_aws():
            apigw = boto3.client("apigateway", region_name="eu-west-1")
            api = apigw.create_rest_api(name="x")["id"]
            apigw.put_gateway_response(restApiId=api, responseType="ACCESS_DENIED", statusCode="403")
            apigw.put_rest_api(restApiId=api, mode="overwrite", body=json.dumps(document).encode())
            responses = {r["responseType"]: r for r in apigw.get_gateway_responses(restApiId=api)["items"]}
            resource = next(
                r["id"] for r in apigw.get_resources(restApiId=api)["items"] if r["path"] == "/things/{thing_id}"
            )
            method = apigw.get_method(restApiId=api, resourceId=resource, httpMethod="GET")
    finally:
        models.RestAPI.create_deployment = original
        models.APIGatewayBackend.put_rest_api = imported
    # overwrite: the document is the whole API, so ACCESS_DENIED set before is back to the default
    assert set(responses) == {"UNAUTHORIZED", "MISSING_AUTHENTICATION_TOKEN"}
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    assert responses["UNAUTHORIZED"]["responseTemplates"] == {"application/json": '{"error": "unauthorized"}'}
    assert method["requestParameters"] == {
        "method.request.path.thing_id": True,
        "method.request.header.Authorization": False,
        "method.request.querystring.q": False,
    }
    assert method["methodIntegration"]["cacheKeyParameters"] == keys
