"""The real deploy against an emulated AWS: moto's server as the endpoint (AWS_ENDPOINT_URL).

`make deploy`'s code (deploy.deploy.run) runs as it would against an account: the infra step,
then the `chalice` command itself in a subprocess, then the settings chalice cannot express.
Afterwards the resources are read back from the emulator. Stand-ins, each stated where it is
(tests/deploy/standin/, tests/deploy/test_standin.py holds them to the real thing):

- the two stacks are stand-in templates with the real ones' parameters and outputs (moto's
  CloudFormation has no Cognito, RDS, Firehose, WAFv2 or CloudFront resources);
- in the chalice process: Swagger 2.0 relabelled OpenAPI 3 for moto's importer, S3 filter rule
  names in lower case, no download of third-party wheels (no network; moto never runs the code);
- in moto's server (standin/moto_server.py): a deployment to an existing stage keeps the
  stage's settings, as API Gateway does (moto replaced the stage); an imported document sets the
  gateway responses it names (all of them, on overwrite), the methods' declared parameters and
  the integrations' cache keys, as API Gateway does (moto dropped the three and kept the
  previous gateway responses on overwrite);
- in this process: `UpdateTerminationProtection` and `Invoke` (the migrate function) are
  answered and recorded here (moto's server does not implement the first and needs Docker for
  the second).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from chalicelib.apigateway_extensions import GATEWAY_RESPONSES, GATEWAY_RESPONSES_KEY
from deploy import apigateway, capacity, deploy, functions, origin_secret, stacks, state
from deploy.routes import routes_of
from tests.deploy.conftest import committed_config_text

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "standin"
REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's
CHALICE = Path(sys.executable).parent / "chalice"

# Skipped without moto's server on a laptop; in CI (CI=true) a missing server fails the run.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("flask") is None and not os.environ.get("CI"),
    reason="moto[server] is not installed (requirements-dev.txt)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(STANDIN / "moto_server.py"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def aws_env(moto_endpoint: str) -> Iterator[dict[str, str]]:
    values = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            mp.delenv(key, raising=False)
        yield values


def copy_project(target: Path) -> Path:
    """What a fresh clone holds (the RDS CA bundle included), with the stand-in stacks."""
    target.mkdir(parents=True)
    for entry in ("app.py", "requirements.txt"):
        shutil.copy2(ROOT / entry, target / entry)
    for package in ("chalicelib", "deploy"):  # deploy/: the analysis each GET's cache key comes from
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    (target / ".chalice").mkdir()
    (target / ".chalice" / "config.json").write_text(committed_config_text())
    shutil.copytree(ROOT / ".chalice" / "templates", target / ".chalice" / "templates")
    (target / "infrastructure").mkdir()
    for name in ("data.yaml", "edge.yaml"):
        shutil.copy2(STANDIN / name, target / "infrastructure" / name)
    return target


class Recorder:
    """Answers the calls moto's server cannot, and remembers them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_migrate = False

    def install(self, session: Any) -> None:
        session.events.register("before-call.cloudformation.UpdateTerminationProtection", self.termination)
        session.events.register("before-call.lambda.Invoke", self.invoke)

    def termination(self, params: dict[str, Any], **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        self.calls.append(("UpdateTerminationProtection", dict(params["body"])))
        return AWSResponse("", 200, {}, None), {}

    def invoke(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> Any:
        """Record the invocation with the client's settings; answer as Lambda does (migrate's
        answer, or its error when `fail_migrate` is set)."""
        from botocore.awsrequest import AWSResponse
        from botocore.response import StreamingBody

        config = context["client_config"]
        kind = params["headers"].get("X-Amz-Invocation-Type", "RequestResponse")
        self.calls.append(
            (
                "Invoke",
                {
                    "function": unquote(params["url_path"].split("/functions/")[1].split("/")[0]),
                    "type": kind,
                    "payload": params["body"],
                    "read_timeout": config.read_timeout,
                    "retries": dict(config.retries or {}),
                },
            )
        )
        if kind == "Event":
            return AWSResponse("", 202, {}, None), {"StatusCode": 202}
        body = b'{"errorMessage": "ALTER TABLE todos: lock wait"}' if self.fail_migrate else b'{"applied": [1]}'
        answer: dict[str, Any] = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(body), len(body))}
        if self.fail_migrate:
            answer["FunctionError"] = "Unhandled"
        return AWSResponse("", 200, {}, None), answer

    def invocations(self, function: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == "Invoke" and function in body["function"]]


def chalice_env(record_dir: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(STANDIN),
        SLUICE_MOTO_STANDIN="1",
        SLUICE_STANDIN_RECORD_DIR=str(record_dir),
    )


class Deployment:
    def __init__(self, project: Path, record_dir: Path) -> None:
        self.project = project
        self.record_dir = record_dir
        self.recorder = Recorder()
        self.logs: list[list[str]] = []

    def session(self) -> Any:
        import boto3

        session = boto3.Session(region_name=REGION)
        self.recorder.install(session)
        return session

    def runner(self, command: list[str], env: dict[str, str], check: bool) -> Any:
        return subprocess.run(command, env={**env, **chalice_env(self.record_dir)}, check=check, capture_output=True)

    def make_deploy(self, **options: Any) -> list[str]:
        log: list[str] = []
        settings = deploy.Options(stage="prod", project_dir=self.project, **options)
        deploy.run(self.session(), settings, self.runner, log.append)
        self.logs.append(log)
        return log

    def make_infra(self) -> list[str]:
        log: list[str] = []
        deploy.run_infra(self.session(), deploy.Options(stage="prod", project_dir=self.project), log.append)
        return log

    def chalice(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`chalice ARGS` from the project folder, by hand (no make)."""
        return subprocess.run(
            [str(CHALICE), *args],
            cwd=self.project,
            env=chalice_env(self.record_dir),
            capture_output=True,
            text=True,
            check=False,
        )

    def rest_api_id(self) -> str:
        return str(deploy.deployed_resources(self.project, "prod")["rest_api"]["rest_api_id"])


@pytest.fixture(scope="module")
def deployment(aws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    base = tmp_path_factory.mktemp("emulated")
    record = base / "record"
    record.mkdir()
    result = Deployment(copy_project(base / "project"), record)
    result.make_deploy()
    return result


def clients() -> dict[str, Any]:
    import boto3

    return {
        name: boto3.client(name, region_name=REGION)
        for name in ("apigateway", "lambda", "s3", "events", "logs", "cloudformation", "ssm", "iam")
    }


def inventory() -> dict[str, Any]:
    """Everything the deploy makes, read back from the emulator (ids included, so a duplicate or a
    re-creation shows)."""
    c = clients()
    functions = sorted((f["FunctionName"], f["FunctionArn"]) for f in c["lambda"].list_functions()["Functions"])
    apis = sorted((a["name"], a["id"]) for a in c["apigateway"].get_rest_apis()["items"])
    rules = sorted((r["Name"], r.get("ScheduleExpression")) for r in c["events"].list_rules()["Rules"])
    roles = sorted(r["RoleName"] for r in c["iam"].list_roles()["Roles"] if r["RoleName"].startswith("sluice-"))
    stacks = sorted(s["StackName"] for s in c["cloudformation"].describe_stacks()["Stacks"])
    edge_stacks = sorted(s["StackName"] for s in clients_in("us-east-1")["cloudformation"].describe_stacks()["Stacks"])
    return {"functions": functions, "apis": apis, "rules": rules, "roles": roles, "stacks": stacks + edge_stacks}


def clients_in(region: str) -> dict[str, Any]:
    import boto3

    return {"cloudformation": boto3.client("cloudformation", region_name=region)}


def bucket_name() -> str:
    return f"sluice-prod-writes-{ACCOUNT}-{REGION}"


# -- the first deploy ------------------------------------------------------------------------------
def test_the_functions_exist_with_their_settings(deployment):
    c = clients()
    names = {f["FunctionName"]: f for f in c["lambda"].list_functions()["Functions"]}
    assert set(names) == {
        "sluice-prod",
        "sluice-prod-load_writes",
        "sluice-prod-reconcile_writes",
        "sluice-prod-migrate",
    }
    reserved = {
        n: c["lambda"].get_function_concurrency(FunctionName=n).get("ReservedConcurrentExecutions") for n in names
    }
    assert reserved == {
        "sluice-prod": 100,
        "sluice-prod-load_writes": 5,
        "sluice-prod-reconcile_writes": 1,
        "sluice-prod-migrate": 1,
    }
    api = c["lambda"].get_function_configuration(FunctionName="sluice-prod")
    env = api["Environment"]["Variables"]
    assert env["WRITE_TRANSPORT"] == "firehose"
    assert env["WRITES_BUCKET"] == bucket_name()
    assert env["DATABASE_URL"].startswith("mysql://sluice-prod-master.") and env["DATABASE_URL"].endswith(
        "ssl=verify_identity&ssl_ca=rds"
    )
    assert "ssl=verify_identity&ssl_ca=system" in env["MASTER_READ_URL"]
    assert all("ssl=verify_identity&ssl_ca=rds" in url for url in env["REPLICA_URLS"].split(","))
    assert len(api["VpcConfig"]["SubnetIds"]) == 3
    # The package chalice uploaded carries the RDS CA bundle every function connects with.
    (package,) = (deployment.project / ".chalice" / "deployments").glob("*.zip")
    with zipfile.ZipFile(package) as zipped:
        packed = zipped.read("chalicelib/db/certs/rds-global-bundle.pem")
    assert packed == (ROOT / "chalicelib" / "db" / "certs" / "rds-global-bundle.pem").read_bytes()
    for name in names:
        group = c["logs"].describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{name}")["logGroups"]
        assert [g.get("retentionInDays") for g in group if g["logGroupName"] == f"/aws/lambda/{name}"] == [90]


def test_the_loader_is_notified_of_writes_and_its_failures_are_kept(deployment):
    c = clients()
    (notification,) = c["s3"].get_bucket_notification_configuration(Bucket=bucket_name())[
        "LambdaFunctionConfigurations"
    ]
    assert notification["LambdaFunctionArn"].endswith(":function:sluice-prod-load_writes")
    assert notification["Events"] == ["s3:ObjectCreated:*"]
    rules = notification["Filter"]["Key"]["FilterRules"]
    assert [(r["Name"].lower(), r["Value"]) for r in rules] == [("prefix", "writes/")]
    config = c["lambda"].get_function_event_invoke_config(FunctionName="sluice-prod-load_writes")
    assert config["MaximumRetryAttempts"] == 2
    assert config["MaximumEventAgeInSeconds"] == 6 * 3600
    assert config["DestinationConfig"]["OnFailure"]["Destination"].endswith(":sluice-prod-load-writes-failures")


def test_the_reconciler_runs_on_its_schedule(deployment):
    c = clients()
    (rule,) = [r for r in c["events"].list_rules()["Rules"] if "reconcile_writes" in r["Name"]]
    assert rule["ScheduleExpression"] == "rate(15 minutes)"
    (target,) = c["events"].list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"].endswith(":function:sluice-prod-reconcile_writes")


def test_the_rest_api_has_every_route_behind_the_cognito_authorizer(deployment, app_module):
    c = clients()
    paths = {r["path"] for r in c["apigateway"].get_resources(restApiId=deployment.rest_api_id())["items"]}
    assert {route.path for route in routes_of(app_module)} <= paths
    # moto keeps no authorizers: read the document chalice sent to API Gateway.
    document = json.loads((deployment.record_dir / "rest-api.json").read_text())
    assert document["swagger"] == "2.0"
    (scheme,) = document["securityDefinitions"].values()
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "cognito_user_pools"
    assert authorizer["providerARNs"] == [f"arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{REGION}_StandIn01"]
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            public = path in ("/health", "/openapi.json") or method == "options"
            assert bool(operation.get("security")) is not public, (method, path)


def test_the_stage_throttles_per_method_and_caches_nothing(deployment, app_module):
    c = clients()
    stage = c["apigateway"].get_stage(restApiId=deployment.rest_api_id(), stageName="api")
    assert not stage.get("cacheClusterEnabled")
    settings = stage["methodSettings"]
    expected = apigateway.desired_method_settings(routes_of(app_module), capacity.load(ROOT, "prod").stage_settings())
    for key, wanted in expected.items():
        assert settings[key]["cachingEnabled"] is False, key
        assert settings[key]["throttlingRateLimit"] == wanted["throttlingRateLimit"], key
        assert settings[key]["throttlingBurstLimit"] == wanted["throttlingBurstLimit"], key
    assert settings["~1todos/GET"]["throttlingRateLimit"] == 500.0
    assert settings["~1todos~1batch/POST"]["throttlingRateLimit"] == 5.0
    responses = {
        r["responseType"]: r for r in c["apigateway"].get_gateway_responses(restApiId=deployment.rest_api_id())["items"]
    }
    assert json.loads(responses["UNAUTHORIZED"]["responseTemplates"]["application/json"])["error"] == "unauthorized"


def test_protections_come_on_only_after_the_stack_was_created(deployment):
    calls = [body for name, body in deployment.recorder.calls if name == "UpdateTerminationProtection"]
    assert calls[0] == {
        "Action": "UpdateTerminationProtection",
        "Version": "2010-05-15",
        "StackName": "sluice-prod-data",
        "EnableTerminationProtection": "true",
    }
    stack = clients()["cloudformation"].describe_stacks(StackName="sluice-prod-data")["Stacks"][0]
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in stack["Parameters"]}
    assert parameters["DatabaseDeletionProtection"] == "true"
    first = deployment.logs[0]
    created = first.index("creating stack sluice-prod-data")
    protected = first.index("created; switching the master's deletion protection on")
    assert created < protected


def test_the_record_and_the_origin_secret_are_kept_in_the_account(deployment):
    ssm = clients()["ssm"]
    record = json.loads(ssm.get_parameter(Name="/sluice/prod/chalice-deployed")["Parameter"]["Value"])
    assert {r["name"] for r in record["resources"]} >= {"api_handler", "load_writes", "rest_api"}
    secret = ssm.get_parameter(Name="/sluice/prod/origin-verify", WithDecryption=True)["Parameter"]
    assert secret["Type"] == "SecureString"
    assert len(json.loads(secret["Value"])["current"]) >= 32


def test_migrate_runs_after_every_protection_waiting_its_whole_timeout_and_never_twice(deployment):
    first = deployment.logs[0]
    order = [
        "5. chalice deploy",
        "6. API Gateway: gateway responses, stage cache, throttling, web ACL",
        "7. log retention and the loader's asynchronous invocation",
        "8. edge stack (us-east-1)",
        "9. migrate (the master's schema, inside the VPC)",
        "10. reconcile of deferred objects",
    ]
    assert [first.index(line) for line in order] == sorted(first.index(line) for line in order)
    (migrate, *_) = deployment.recorder.invocations("migrate")
    timeout = clients()["lambda"].get_function_configuration(FunctionName="sluice-prod-migrate")["Timeout"]
    assert timeout == 900  # Lambda's longest: a big ALTER TABLE may need most of it
    assert migrate["type"] == "RequestResponse"
    assert migrate["read_timeout"] > timeout  # botocore's default 60 s cut it short
    assert migrate["retries"]["total_max_attempts"] == 1  # a migration still running is never invoked again


def test_the_deploy_ends_by_asking_the_reconciler_for_deferred_objects(deployment, app_module):
    from chalice.app import CloudWatchEvent

    (reconcile, *_) = deployment.recorder.invocations("reconcile_writes")
    assert reconcile["function"].endswith(":function:sluice-prod-reconcile_writes")
    assert reconcile["type"] == "Event"  # asynchronous: the deploy does not wait for its run
    payload = json.loads(reconcile["payload"])
    event = CloudWatchEvent(payload, None)  # what chalice's scheduled handler hands the function
    assert (event.source, event.detail) == ("sluice.deploy", {"reconcile": "deferred"})
    assert (event.account, event.region) == (ACCOUNT, REGION)


def test_a_failing_migrate_skips_no_protection(deployment):
    apigw = clients()["apigateway"]
    api_id = deployment.rest_api_id()
    apigw.delete_gateway_response(restApiId=api_id, responseType="UNAUTHORIZED")  # something to mend
    reconciles = len(deployment.recorder.invocations("reconcile_writes"))
    deployment.recorder.fail_migrate = True
    log: list[str] = []
    try:
        with pytest.raises(functions.MigrationFailed, match="lock wait"):
            deploy.run(
                deployment.session(),
                deploy.Options(stage="prod", project_dir=deployment.project),
                deployment.runner,
                log.append,
            )
    finally:
        deployment.recorder.fail_migrate = False
    # Everything before migrate was done: the gateway response is back, the stage and the edge set
    assert log.index("8. edge stack (us-east-1)") < log.index("9. migrate (the master's schema, inside the VPC)")
    responses = {r["responseType"] for r in apigw.get_gateway_responses(restApiId=api_id)["items"]}
    assert "UNAUTHORIZED" in responses
    # and nothing after it: the reconciler waits for a schema that is there
    assert "10. reconcile of deferred objects" not in log
    assert len(deployment.recorder.invocations("reconcile_writes")) == reconciles


# -- by hand, again, and from a fresh clone -----------------------------------------------------
def sent_document(deployment: Deployment) -> dict[str, Any]:
    """The last document chalice sent to API Gateway (put_rest_api or import_rest_api)."""
    return dict(json.loads((deployment.record_dir / "rest-api.json").read_text()))


def test_a_plain_chalice_deploy_keeps_the_gateway_responses(deployment):
    """chalice re-imports the API (put_rest_api, overwrite): its document carries them."""
    apigw = clients()["apigateway"]
    api_id = deployment.rest_api_id()

    result = deployment.chalice("deploy", "--stage", "prod")

    assert result.returncode == 0, result.stderr
    assert deployment.rest_api_id() == api_id
    expected = {r.response_type: r.document_entry() for r in GATEWAY_RESPONSES}
    assert sent_document(deployment)[GATEWAY_RESPONSES_KEY] == expected
    responses = {r["responseType"]: r for r in apigw.get_gateway_responses(restApiId=api_id)["items"]}
    for response in GATEWAY_RESPONSES:
        got = responses[response.response_type]
        body = json.loads(got["responseTemplates"]["application/json"])
        assert body == {"error": response.code, "message": response.message}
        assert got["responseParameters"] == response.parameters()
        assert got.get("statusCode") == response.status
    assert json.loads(responses["UNAUTHORIZED"]["responseTemplates"]["application/json"])["error"] == "unauthorized"
    assert responses["THROTTLED"]["responseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"
    assert apigateway.gateway_response_calls(apigw, api_id) == []  # nothing left for make deploy to mend


def test_a_plain_chalice_deploy_sends_every_gets_cache_key(deployment, app_module):
    result = deployment.chalice("deploy", "--stage", "prod")
    assert result.returncode == 0, result.stderr
    document = sent_document(deployment)
    for route in routes_of(app_module):
        operation = document["paths"][route.path][route.method.lower()]
        keys = operation["x-amazon-apigateway-integration"].get("cacheKeyParameters")
        if not route.is_read:
            assert keys is None, route
            continue
        # The caller, If-None-Match, the path parameters and every query parameter the view reads
        assert keys == list(route.cache_key_parameters()), route
        assert keys[:2] == ["method.request.header.Authorization", "method.request.header.If-None-Match"]
        places = {"header": "header", "query": "querystring", "path": "path"}
        declared = {f"method.request.{places[p['in']]}.{p['name']}" for p in operation["parameters"]}
        assert set(keys) <= declared, route  # API Gateway caches only on declared parameters
        assert "cacheNamespace" not in operation["x-amazon-apigateway-integration"]  # the resource's own id
    get_todo = document["paths"]["/todos/{todo_id}"]["get"]["x-amazon-apigateway-integration"]
    assert "method.request.querystring.min_version" in get_todo["cacheKeyParameters"]


def test_with_the_stage_cache_on_a_plain_chalice_deploy_leaves_every_get_keyed(deployment, app_module):
    routes = routes_of(app_module)
    apigw = clients()["apigateway"]
    api_id = deployment.rest_api_id()
    must_key = lambda r: r.cache_key_parameters()  # noqa: E731

    # GIVEN the stage cache turned on by the deploy parameter
    log = deployment.make_deploy(api_cache_ttl=10)
    try:
        assert any("stage cache: on for GETs, 10 s" in line for line in log)
        stage = apigw.get_stage(restApiId=api_id, stageName="api")
        assert stage["cacheClusterEnabled"] and stage["cacheClusterSize"] == "0.5"
        for route in routes:
            entry = stage["methodSettings"][apigateway.method_key(route)]
            assert entry["cachingEnabled"] is route.is_read, route
            if route.is_read:
                assert entry["cacheTtlInSeconds"] == 10 and entry["cacheDataEncrypted"] is True
                assert entry["requireAuthorizationForCacheControl"] is False
        assert stage["methodSettings"]["*/*"]["cachingEnabled"] is False

        # WHEN chalice deploys by hand (put_rest_api, overwrite; a new deployment of the stage)
        result = deployment.chalice("deploy", "--stage", "prod")
        assert result.returncode == 0, result.stderr

        # THEN every cached GET is still keyed on everything its answer depends on
        assert apigateway.cached_gets_without_keys(apigw, api_id, "api", must_key, routes) == []
        assert apigateway.current_cache_ttl(apigw.get_stage(restApiId=api_id, stageName="api")) == 10
        # AND a later make deploy without the parameter keeps the stage cache as it is
        deployment.make_deploy()
        assert apigateway.current_cache_ttl(apigw.get_stage(restApiId=api_id, stageName="api")) == 10
    finally:
        deployment.make_deploy(api_cache_ttl=0)
    stage = apigw.get_stage(restApiId=api_id, stageName="api")
    assert not stage.get("cacheClusterEnabled")
    assert not any(entry.get("cachingEnabled") for entry in stage["methodSettings"].values())


def test_a_second_make_deploy_leaves_the_same_resources(deployment):
    before = inventory()
    log = deployment.make_deploy()
    assert inventory() == before
    assert not [
        line
        for line in log
        if line.startswith(("put_gateway_response", "create_deployment", "put_function_event", "create_log_group"))
    ]
    assert len(before["apis"]) == 1 and len(before["rules"]) == 1


def test_a_fresh_clone_updates_the_stage_instead_of_creating_it_twice(deployment, tmp_path):
    before = inventory()
    clone = Deployment(copy_project(tmp_path / "clone"), deployment.record_dir)
    committed = json.loads(committed_config_text())
    assert "prod" not in committed["stages"]  # nothing account-specific is committed

    log = clone.make_infra()

    assert any(line.startswith("restored .chalice/deployed/prod.json") for line in log)
    result = clone.chalice("deploy", "--stage", "prod")
    assert result.returncode == 0, result.stderr
    assert "Creating Rest API" not in result.stdout + result.stderr
    assert inventory() == before


def test_a_newer_local_record_is_kept_and_saved_to_the_account_by_infra(deployment):
    ssm = clients()["ssm"]
    path = state.record_path(deployment.project, "prod")
    original = path.read_text()
    record = json.loads(original)
    record["resources"].append({"name": "made_by_hand", "resource_type": "marker"})
    path.write_text(json.dumps(record))
    later = time.time() + 60  # written by hand after the account's copy, whatever the clocks' resolution
    os.utime(path, (later, later))
    try:
        log = deployment.make_infra()
        assert any(line.startswith(".chalice/deployed/prod.json kept, and saved to SSM") for line in log)
        assert "made_by_hand" in path.read_text()
        assert "made_by_hand" in ssm.get_parameter(Name="/sluice/prod/chalice-deployed")["Parameter"]["Value"]
    finally:
        path.write_text(original)
        os.utime(path, (later + 60, later + 60))
        deployment.make_infra()  # the account's copy back in step with the project's
    assert "made_by_hand" not in ssm.get_parameter(Name="/sluice/prod/chalice-deployed")["Parameter"]["Value"]


def test_rotating_the_origin_secret_accepts_both_values_until_cloudfront_sends_the_new_one(deployment):
    ssm = clients()["ssm"]
    name = "/sluice/prod/origin-verify"
    before = json.loads(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    log: list[str] = []

    deploy.run(
        deployment.session(),
        deploy.Options(stage="prod", project_dir=deployment.project, rotate_origin_secret=True),
        deployment.runner,
        log.append,
    )

    after = json.loads(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    assert after["current"] != before["current"] and after["previous"] == ""
    rotating = next(i for i, line in enumerate(log) if line.startswith(f"rotating {name}"))
    edge = log.index("8. edge stack (us-east-1)")
    dropped = log.index("origin secret rotated: the web ACL stops accepting the previous value")
    assert rotating < edge < dropped
    assert log[dropped + 1] == "2. data stack"  # updated once more, without the old value
    assert not any(before["current"] in line or after["current"] in line for line in log)  # never printed


def data_stack_origin_values() -> dict[str, str]:
    stack = clients()["cloudformation"].describe_stacks(StackName="sluice-prod-data")["Stacks"][0]
    return {
        p["ParameterKey"]: p.get("ParameterValue", "")
        for p in stack["Parameters"]
        if p["ParameterKey"].startswith("OriginVerify")
    }


def test_a_rotation_is_not_started_over_one_that_stopped_half_way(deployment, monkeypatch):
    ssm = clients()["ssm"]
    name = "/sluice/prod/origin-verify"
    before = json.loads(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    rotate = deploy.Options(stage="prod", project_dir=deployment.project, rotate_origin_secret=True)

    # GIVEN a rotation whose edge stack update failed: CloudFront still sends the old value
    def edge_failed(ctx: Any, rest_api_id: str) -> None:
        raise stacks.StackError("sluice-prod-edge: update did not complete: Distribution: throttled")

    with monkeypatch.context() as patched:
        patched.setattr(deploy, "step_edge_stack", edge_failed)
        with pytest.raises(stacks.StackError):
            deploy.run(deployment.session(), rotate, deployment.runner, [].append)
    half = json.loads(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    assert half["previous"] == before["current"] != half["current"]
    accepted = data_stack_origin_values()
    assert {accepted["OriginVerifyCurrent"], accepted["OriginVerifyPrevious"]} == {half["current"], before["current"]}

    # WHEN the rotation is asked for again
    log: list[str] = []
    with pytest.raises(origin_secret.RotationUnfinished, match="without --rotate-origin-secret"):
        deploy.run(deployment.session(), rotate, deployment.runner, log.append)

    # THEN nothing changed: the value CloudFront still sends stays accepted
    assert json.loads(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]) == half
    assert data_stack_origin_values() == accepted
    assert not any(line.startswith("2.") for line in log)  # it stopped before any stack

    # AND a plain run finishes the old rotation: CloudFront switched, then the old value dropped
    finish: list[str] = []
    deploy.run(
        deployment.session(),
        deploy.Options(stage="prod", project_dir=deployment.project),
        deployment.runner,
        finish.append,
    )
    done = json.loads(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    assert done == {"current": half["current"], "previous": ""}
    assert finish.index("8. edge stack (us-east-1)") < finish.index(
        "origin secret rotated: the web ACL stops accepting the previous value"
    )
    assert data_stack_origin_values()["OriginVerifyPrevious"] == ""


# -- a stage without infrastructure ---------------------------------------------------------------
def test_deploying_dev_stops_with_one_line_and_creates_nothing(deployment):
    before = inventory()

    result = deployment.chalice("deploy")  # stage dev

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "stage 'dev' has no infrastructure" in lines[0]
    assert inventory() == before


def test_an_autogen_stage_gets_a_policy_that_grants_nothing_the_app_calls(aws_env, tmp_path):
    """Why every stage with infrastructure writes its policies by hand: a stage that passes the
    guard but keeps `autogen_policy: true` gets the policy Chalice's analyzer writes from app.py,
    and app.py makes no AWS call itself (the routes are derived in chalicelib/routes.py, and every
    client is made in chalicelib), so that policy grants none of the calls the functions make.
    (Before the routes were derived, the analyzer crashed on app.py with KeyError: 'dict'.)"""
    project = copy_project(tmp_path / "autogen")
    config = json.loads((project / ".chalice" / "config.json").read_text())
    config["stages"]["autogen"] = {"autogen_policy": True, "environment_variables": {"WRITE_TRANSPORT": "firehose"}}
    (project / ".chalice" / "config.json").write_text(json.dumps(config))

    result = Deployment(project, tmp_path).chalice("deploy", "--stage", "autogen")

    assert result.returncode != 0  # it cannot finish either: the writes bucket is the data stack's
    iam = clients()["iam"]
    granted = set()
    for role in (r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("sluice-autogen")):
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            statements = document["Statement"] if isinstance(document, dict) else json.loads(document)["Statement"]
            for statement in statements:
                actions = statement["Action"]
                granted.update([actions] if isinstance(actions, str) else actions)
    assert not any(a.startswith(("firehose:", "s3:", "secretsmanager:", "rds-db:")) for a in granted), granted


def test_prod_before_infra_stops_the_same_way(aws_env, tmp_path):
    fresh = Deployment(copy_project(tmp_path / "fresh"), tmp_path)
    result = fresh.chalice("deploy", "--stage", "prod")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "stage 'prod' has no infrastructure" in result.stderr
    assert "make infra STAGE=<stage>" in result.stderr


def test_the_alarms_get_the_api_stage_and_the_edge_the_alarm_address(deployment):
    data = clients()["cloudformation"].describe_stacks(StackName="sluice-prod-data")["Stacks"][0]
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in data["Parameters"]}
    # the dimensions of the API's metrics in the 5XX alarm: Chalice's API name and its stage
    assert (parameters["ApiName"], parameters["ApiStage"]) == ("sluice", "api")
    edge = clients_in("us-east-1")["cloudformation"].describe_stacks(StackName="sluice-prod-edge")["Stacks"][0]
    edge_parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in edge["Parameters"]}
    assert edge_parameters["AlarmEmail"] == ""  # the data stack has none (no AlarmEmail output)
