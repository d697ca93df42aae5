"""Shared fixtures for the deploy step's tests: data stack outputs shaped like the real ones,
botocore clients for Stubber (no credentials, no network), and a stateful fake of the few API
Gateway operations the deploy step uses, to show what a second run does after a first one."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
ACCOUNT = "123456789012"
BUCKET = f"sluice-prod-writes-{ACCOUNT}-{REGION}"
CONDITIONAL_OUTPUTS = {"CacheUrl", "CacheEndpoint", "AlarmEmail"}  # only with EnableCache=true, an AlarmEmail

# One value per output of infrastructure/data.yaml (test_policies checks the two stay in step).
OUTPUTS: dict[str, str] = {
    "Stage": "prod",
    "VpcId": "vpc-0a1b2c3d4e5f60718",
    "PrivateSubnetIds": "subnet-0aaaaaaaaaaaaaaa1,subnet-0bbbbbbbbbbbbbbb2,subnet-0ccccccccccccccc3",
    "LambdaSecurityGroupId": "sg-0123456789abcdef0",
    "KmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "UserPoolId": f"{REGION}_AbCdEf123",
    "UserPoolArn": f"arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{REGION}_AbCdEf123",
    "UserPoolClientId": "1example23456789abcdefghij",
    "WritesBucketName": BUCKET,
    "WritesBucketArn": f"arn:aws:s3:::{BUCKET}",
    "FirehoseStreamName": "sluice-prod-writes",
    "FirehoseStreamArn": f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/sluice-prod-writes",
    "DatabaseSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:sluice/prod/database/master-AbCdEf",
    "DatabaseName": "sluice",
    "DatabasePort": "3306",
    "ProxyEndpoint": f"sluice-prod.proxy-abcdefghijkl.{REGION}.rds.amazonaws.com",
    "MasterEndpoint": f"sluice-prod-master.abcdefghijkl.{REGION}.rds.amazonaws.com",
    "ReplicaEndpoints": (
        f"sluice-prod-replica-1.abcdefghijkl.{REGION}.rds.amazonaws.com,"
        f"sluice-prod-replica-2.abcdefghijkl.{REGION}.rds.amazonaws.com"
    ),
    "LoaderFailureQueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:sluice-prod-load-writes-failures",
    "LoaderFailureQueueUrl": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/sluice-prod-load-writes-failures",
    "AlarmTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:sluice-prod-alarms",
    "ApiWebAclArn": f"arn:aws:wafv2:{REGION}:{ACCOUNT}:regional/webacl/sluice-prod-api/0123abcd-4567-89ef-0123-456789abcdef",
}


def committed_config_text() -> str:
    """.chalice/config.json as committed: after a real `make infra` the work tree's copy holds the
    filled prod stage, which a test of a fresh clone must not see."""
    import subprocess

    result = subprocess.run(
        ["git", "show", "HEAD:.chalice/config.json"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout if result.returncode == 0 else (ROOT / ".chalice" / "config.json").read_text()


@pytest.fixture
def outputs() -> dict[str, str]:
    return dict(OUTPUTS)


@pytest.fixture
def variables(outputs: dict[str, str]) -> dict[str, Any]:
    from deploy.render import template_variables

    return template_variables(
        outputs, partition="aws", region=REGION, account_id=ACCOUNT, stage="prod", app_name="sluice"
    )


@pytest.fixture
def config() -> dict[str, Any]:
    """config.json with the stage templates in place (what `make infra` renders)."""
    from deploy.render import TEMPLATE_DIR, load_json

    config = json.loads(committed_config_text())
    for path in sorted((ROOT / TEMPLATE_DIR).glob("stage-*.json")):
        config["stages"].update(load_json(path)["stages"])
    return dict(config)


@pytest.fixture(scope="session")
def app_module() -> Any:
    import app

    return app


def mock_method(apigw: Any, api: str, resource_id: str, method: str) -> None:
    """A method without authorization and with a MOCK integration: enough for a deployment."""
    apigw.put_method(restApiId=api, resourceId=resource_id, httpMethod=method, authorizationType="NONE")
    apigw.put_integration(restApiId=api, resourceId=resource_id, httpMethod=method, type="MOCK")


def replace_stage_settings(apigw: Any, api: str, stage: str, values: dict[str, str]) -> None:
    """One update_stage that replaces each setting path with its value."""
    operations = [{"op": "replace", "path": path, "value": value} for path, value in values.items()]
    apigw.update_stage(restApiId=api, stageName=stage, patchOperations=operations)


def client(service: str, region: str = REGION) -> Any:
    """A real botocore client (request shapes are validated) that Stubber will answer."""
    return botocore.session.get_session().create_client(
        service, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


# -- a stateful API Gateway fake --------------------------------------------------------------------
METHOD_SETTING_FIELDS = {
    "caching/enabled": ("cachingEnabled", "bool"),
    "caching/ttlInSeconds": ("cacheTtlInSeconds", "int"),
    "caching/dataEncrypted": ("cacheDataEncrypted", "bool"),
    "caching/requireAuthorizationForCacheControl": ("requireAuthorizationForCacheControl", "bool"),
    "caching/unauthorizedCacheControlHeaderStrategy": ("unauthorizedCacheControlHeaderStrategy", "str"),
    "throttling/rateLimit": ("throttlingRateLimit", "float"),
    "throttling/burstLimit": ("throttlingBurstLimit", "int"),
}
# What API Gateway gives a new method-level entry (it does not copy the stage-wide one).
NEW_METHOD_SETTING = {
    "metricsEnabled": False,
    "dataTraceEnabled": False,
    "throttlingRateLimit": 10000.0,
    "throttlingBurstLimit": 5000,
    "cachingEnabled": False,
    "cacheTtlInSeconds": 300,
    "cacheDataEncrypted": False,
    "requireAuthorizationForCacheControl": True,
    "unauthorizedCacheControlHeaderStrategy": "SUCCEED_WITH_RESPONSE_HEADER",
}


def _convert(kind: str, value: str) -> Any:
    return {"bool": lambda v: v == "true", "int": int, "float": float, "str": str}[kind](value)


class _Paginator:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages

    def paginate(self, **_: Any) -> Iterator[dict[str, Any]]:
        yield from self.pages


class FakeApiGateway:
    """The API as `chalice deploy` leaves it: Chalice's methods (path parameters declared, no
    cache keys), default gateway responses, a stage whose settings survive re-imports."""

    def __init__(self, routes: list[Any], stage_name: str = "api") -> None:
        self.stage_name = stage_name
        self.resources = {path: f"r{i:04d}" for i, path in enumerate(sorted({"/", *(r.path for r in routes)}))}
        self.methods: dict[tuple[str, str], dict[str, Any]] = {}
        for route in routes:
            params = {f"method.request.path.{p}": True for p in route.path_params}
            self.methods[(self.resources[route.path], route.method)] = {
                "httpMethod": route.method,
                "requestParameters": params,
                "methodIntegration": {"type": "AWS_PROXY", "cacheKeyParameters": []},
            }
        self.gateway_responses: dict[str, dict[str, Any]] = {}
        self.stage: dict[str, Any] = {"stageName": stage_name, "cacheClusterEnabled": False, "methodSettings": {}}
        self.deployments = 0
        self.flushes = 0
        self.calls: list[str] = []

    # reads
    def get_paginator(self, name: str) -> _Paginator:
        if name == "get_resources":
            return _Paginator([{"items": [{"id": i, "path": p} for p, i in self.resources.items()]}])
        if name == "get_gateway_responses":
            items = [{"responseType": t, **v} for t, v in self.gateway_responses.items()]
            return _Paginator([{"items": items}])
        raise AssertionError(name)

    def get_method(self, restApiId: str, resourceId: str, httpMethod: str) -> dict[str, Any]:
        self.calls.append("get_method")
        return copy.deepcopy(self.methods[(resourceId, httpMethod)])

    def get_integration(self, restApiId: str, resourceId: str, httpMethod: str) -> dict[str, Any]:
        return copy.deepcopy(self.methods[(resourceId, httpMethod)]["methodIntegration"])

    def get_stage(self, restApiId: str, stageName: str) -> dict[str, Any]:
        if stageName != self.stage_name:
            raise ClientError({"Error": {"Code": "NotFoundException", "Message": "no stage"}}, "GetStage")
        return copy.deepcopy(self.stage)

    # changes
    def update_method(self, restApiId: str, resourceId: str, httpMethod: str, patchOperations: list) -> None:
        self.calls.append("update_method")
        method = self.methods[(resourceId, httpMethod)]
        for op in patchOperations:
            assert op["op"] == "add"
            name = op["path"].removeprefix("/requestParameters/")
            method["requestParameters"][name] = op["value"] == "true"

    def update_integration(self, restApiId: str, resourceId: str, httpMethod: str, patchOperations: list) -> None:
        self.calls.append("update_integration")
        method = self.methods[(resourceId, httpMethod)]
        for op in patchOperations:
            assert op["op"] == "add"
            name = op["path"].removeprefix("/cacheKeyParameters/")
            assert name in method["requestParameters"], f"{name} is not a declared method request parameter"
            method["methodIntegration"]["cacheKeyParameters"].append(name)

    def put_gateway_response(self, restApiId: str, responseType: str, **kwargs: Any) -> None:
        self.calls.append("put_gateway_response")
        self.gateway_responses[responseType] = {**kwargs, "defaultResponse": False}

    def create_deployment(self, restApiId: str, stageName: str, **_: Any) -> None:
        self.calls.append("create_deployment")
        self.deployments += 1

    def flush_stage_cache(self, restApiId: str, stageName: str) -> None:
        self.calls.append("flush_stage_cache")
        self.flushes += 1

    def update_stage(self, restApiId: str, stageName: str, patchOperations: list) -> None:
        self.calls.append("update_stage")
        for op in patchOperations:
            assert op["op"] == "replace", op
            path, value = op["path"], op["value"]
            if path == "/cacheClusterEnabled":
                self.stage["cacheClusterEnabled"] = value == "true"
                self.stage["cacheClusterStatus"] = "AVAILABLE" if value == "true" else "NOT_AVAILABLE"
            elif path == "/cacheClusterSize":
                self.stage["cacheClusterSize"] = value
            elif path == "/tracingEnabled":
                self.stage["tracingEnabled"] = value == "true"
            else:
                _, resource, method, setting = path.split("/", 3)
                field, kind = METHOD_SETTING_FIELDS[setting]
                entry = self.stage["methodSettings"].setdefault(f"{resource}/{method}", dict(NEW_METHOD_SETTING))
                entry[field] = _convert(kind, value)

    def chalice_redeploy(self) -> None:
        """What `chalice deploy` does to an existing API: methods and gateway responses reset."""
        for method in self.methods.values():
            method["requestParameters"] = {
                k: v for k, v in method["requestParameters"].items() if k.startswith("method.request.path.")
            }
            method["methodIntegration"]["cacheKeyParameters"] = []
        self.gateway_responses.clear()
        self.deployments += 1
