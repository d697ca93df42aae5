"""Least privilege, derived from the code rather than listed by hand.

1. Every AWS call the code makes is found statically: the AST of app.py and chalicelib/ is walked
   for `boto3.client("SERVICE")` and for calls of that service's operations on any object
   (`self.client.put_record_batch(...)`, `get_paginator("list_objects_v2")`), each mapped to its
   IAM action.
2. Each call is attributed to the Lambda functions that run the module it is in.
3. Each function also needs what the platform does on its behalf: logs, X-Ray (xray: true),
   network interfaces (it is in a VPC), KMS decryption where the data it reads is encrypted with
   the stage's key (read from infrastructure/data.yaml), the on-failure destination the deploy
   step gives it.
4. The rendered policy of each function allows each of those, for the resources that function
   touches (a small IAM evaluator below, with conditions), and allows nothing else: no action
   outside that set, no wildcard action, no resource outside the stack's except the documented
   `Resource: "*"` exceptions.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from cfnlint.decode.cfn_yaml import load as load_cfn_yaml

from deploy import render
from deploy.deploy import check_templates, template_output_names
from deploy.functions import ASYNC_CONFIGS
from deploy.routes import function_names
from tests.deploy.conftest import ACCOUNT, CONDITIONAL_OUTPUTS, OUTPUTS, REGION, ROOT

STAGE = "prod"
APP = "sluice"

# Where a module's code runs. First match wins; every module that calls AWS must match one.
# The CLI runs on an operator's machine with the operator's credentials, never in Lambda.
OPERATOR_ONLY = "operator"
ALL_FUNCTIONS = frozenset({"api_handler", "load_writes", "reconcile_writes", "migrate"})
ATTRIBUTION: tuple[tuple[str, frozenset[str]], ...] = (
    ("chalicelib/cli.py", frozenset({OPERATOR_ONLY})),
    ("chalicelib/writers/", frozenset({"api_handler"})),
    ("chalicelib/readers/", frozenset({"api_handler"})),
    ("chalicelib/loader/events.py", frozenset({"load_writes"})),
    ("chalicelib/loader/reconciler.py", frozenset({"reconcile_writes"})),
    ("chalicelib/loader/", frozenset({"load_writes", "reconcile_writes"})),
    # Shared code (bootstrap, configuration, the database and its credentials, app.py itself)
    # runs in every function.
    ("", ALL_FUNCTIONS),
)
# Functions the configuration prepares for before the app defines them (see docs/deploy.md).
PENDING_FUNCTIONS = {"migrate": "app.py will get a `migrate` function the deploy step invokes"}

# IAM actions whose name differs from the API operation.
ACTION_FOR_OPERATION = {
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjects"): "ListBucket",
    ("s3", "HeadObject"): "GetObject",
    ("s3", "HeadBucket"): "ListBucket",
}
OWN_VALUES = frozenset({"Partition", "Region", "AccountId", "Stage", "AppName"})
LOG_ACTIONS = frozenset({"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"})
XRAY_ACTIONS = frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"})
VPC_ACTIONS = frozenset(
    {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
)
# The only actions that may have Resource "*": X-Ray (no resource-level permission) and the
# network-interface actions exactly as AWS's AWSLambdaVPCAccessExecutionRole grants them (Lambda
# may refuse to create a VPC function whose role scopes CreateNetworkInterface to subnets).
ANY_RESOURCE_ACTIONS = XRAY_ACTIONS | VPC_ACTIONS


# -- 1. the calls in the code ---------------------------------------------------------------------
@dataclass(frozen=True)
class AwsCall:
    module: str  # path relative to the project
    line: int
    service: str  # boto3 service name
    operation: str  # API operation, PascalCase

    @property
    def action(self) -> str:
        prefix = botocore.session.get_session().get_service_model(self.service).signing_name
        return f"{prefix}:{ACTION_FOR_OPERATION.get((self.service, self.operation), self.operation)}"


def source_files() -> dict[str, Path]:
    """Module path (relative to the project) -> file, for app.py and everything in chalicelib/."""
    files = [ROOT / "app.py", *sorted((ROOT / "chalicelib").rglob("*.py"))]
    return {str(p.relative_to(ROOT)): p for p in files}


def _literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def created_services(trees: dict[str, ast.Module]) -> set[str]:
    """Every service a boto3 client is made for; a client whose service is not a literal fails."""
    services = set()
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "client" and node.args:
                name = _literal(node.args[0])
                assert name is not None, f"{module}:{node.lineno}: a client whose service is not a literal"
                services.add(name)
            assert node.func.attr != "resource", f"{module}:{node.lineno}: boto3 resources are not analysed"
    return services


def aws_calls(files: Mapping[str, Path]) -> list[AwsCall]:
    trees = {module: ast.parse(path.read_text(), str(path)) for module, path in files.items()}
    session = botocore.session.get_session()
    services = created_services(trees)
    by_name: dict[str, list[tuple[str, str]]] = {}
    for service in services:
        for operation in session.get_service_model(service).operation_names:
            by_name.setdefault(xform_name(operation), []).append((service, operation))
    found = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            assert name != "get_waiter", f"{module}:{node.lineno}: waiters are not analysed"
            if name == "get_paginator":
                name = _literal(node.args[0]) if node.args else None
                assert name is not None, f"{module}:{node.lineno}: a paginator whose operation is not a literal"
            matches = by_name.get(name, [])
            assert len(matches) <= 1, f"{module}:{node.lineno}: {name} is an operation of several services"
            for service, operation in matches:
                found.append(AwsCall(module, node.lineno, service, operation))
    return found


def functions_running(module: str) -> frozenset[str]:
    for prefix, functions in ATTRIBUTION:
        if module.startswith(prefix):
            return functions
    raise AssertionError(module)


# -- 2 and 3. what each function needs --------------------------------------------------------
@dataclass(frozen=True)
class Need:
    """One request a function makes: the action, the resources it names, the request context."""

    action: str
    resources: tuple[str, ...]
    context: tuple[tuple[str, str], ...] = ()
    why: str = ""


def function_name(function: str) -> str:
    return f"{APP}-{STAGE}" if function == "api_handler" else f"{APP}-{STAGE}-{function}"


@pytest.fixture(scope="module")
def data_template() -> dict:
    return load_cfn_yaml(str(ROOT / "infrastructure" / "data.yaml"))


def encrypted_with_stage_key(template: dict, resource: str) -> bool:
    props = template["Resources"][resource]["Properties"]
    if resource == "WritesBucket":
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        return rule["SSEAlgorithm"] == "aws:kms" and "KMSMasterKeyID" in rule
    return "KmsKeyId" in props


def request_for(action: str, function: str) -> Need:
    """The request the code makes for an action, with the resource it names at run time."""
    bucket, key = OUTPUTS["WritesBucketArn"], "writes/2024/05/01/12/sluice-prod-writes-1-2024-05-01-12-00-00-abc.gz"
    table: dict[str, Need] = {
        "firehose:PutRecordBatch": Need(action, (OUTPUTS["FirehoseStreamArn"],)),
        "s3:GetObject": Need(action, (f"{bucket}/{key}",)),
        "s3:ListBucket": Need(action, (bucket,), (("s3:prefix", "writes/2024/05/01/12/"),)),
        "secretsmanager:GetSecretValue": Need(action, (OUTPUTS["DatabaseSecretArn"],)),
    }
    assert action in table, f"the test does not know which resource {action} names: add it to request_for"
    return table[action]


def needs_of(function: str, config: dict, template: dict, calls: list[AwsCall]) -> list[Need]:
    stage = config["stages"][STAGE]
    own = function_name(function)
    log_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{own}"
    needs = [
        Need("logs:CreateLogGroup", (log_group,), why="Lambda logs"),
        Need("logs:CreateLogStream", (f"{log_group}:log-stream:2024/05/01/[$LATEST]0123",), why="Lambda logs"),
        Need("logs:PutLogEvents", (f"{log_group}:log-stream:2024/05/01/[$LATEST]0123",), why="Lambda logs"),
    ]
    if stage.get("xray"):
        needs += [Need(a, ("*",), why="xray: true") for a in sorted(XRAY_ACTIONS)]
    if stage.get("subnet_ids"):
        needs += [Need(a, ("*",), why="VPC (as AWSLambdaVPCAccessExecutionRole)") for a in sorted(VPC_ACTIONS)]
    for async_config in ASYNC_CONFIGS:
        if async_config.function == function:
            queue = OUTPUTS[async_config.destination_output]
            needs.append(Need("sqs:SendMessage", (queue,), why="on-failure destination (deploy step)"))
    actions = {c.action for c in calls if function in functions_running(c.module)}
    for action in sorted(actions):
        needs.append(request_for(action, function))
        if action == "s3:GetObject":
            if encrypted_with_stage_key(template, "WritesBucket"):
                needs.append(
                    Need(
                        "kms:Decrypt",
                        (OUTPUTS["KmsKeyArn"],),
                        (
                            ("kms:ViaService", f"s3.{REGION}.amazonaws.com"),
                            ("kms:EncryptionContext:aws:s3:arn", OUTPUTS["WritesBucketArn"]),
                        ),
                        why="objects are SSE-KMS with the stage key",
                    )
                )
            if any(c.action == "s3:GetObject" and "NoSuchKey" in (ROOT / c.module).read_text() for c in calls):
                # Without s3:ListBucket, S3 answers a missing key with 403, not the 404 the code tells apart.
                needs.append(Need("s3:ListBucket", (OUTPUTS["WritesBucketArn"],), why="404 for a missing object"))
        if action == "secretsmanager:GetSecretValue" and encrypted_with_stage_key(template, "DatabaseSecret"):
            needs.append(
                Need(
                    "kms:Decrypt",
                    (OUTPUTS["KmsKeyArn"],),
                    (
                        ("kms:ViaService", f"secretsmanager.{REGION}.amazonaws.com"),
                        ("kms:EncryptionContext:SecretARN", OUTPUTS["DatabaseSecretArn"]),
                    ),
                    why="the secret is encrypted with the stage key",
                )
            )
    return needs


# -- 4. a small IAM evaluator -------------------------------------------------------------------
def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _condition_holds(operator: str, key: str, wanted: Any, context: dict[str, str]) -> bool:
    if key not in context:
        return False  # IAM: a condition on a key the request lacks does not match
    have = context[key]
    values = [str(v) for v in as_list(wanted)]
    if operator in ("StringEquals", "ArnEquals", "Bool"):
        return have in values
    if operator in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(have, v) for v in values)
    raise AssertionError(f"the evaluator does not know {operator}")


def allows(policy: dict, action: str, resource: str, context: dict[str, str]) -> bool:
    for statement in as_list(policy["Statement"]):
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        if action not in as_list(statement["Action"]):
            continue
        if not any(fnmatch.fnmatchcase(resource, pattern) for pattern in as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(
            _condition_holds(op, key, wanted, context)
            for op, pairs in conditions.items()
            for key, wanted in pairs.items()
        ):
            return True
    return False


def policy_actions(policy: dict) -> set[str]:
    return {a for s in as_list(policy["Statement"]) for a in as_list(s["Action"])}


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calls() -> list[AwsCall]:
    return aws_calls(source_files())


@pytest.fixture(scope="module")
def prod_config() -> dict:
    return render.template_config(ROOT)


@pytest.fixture(scope="module")
def policies(prod_config: dict) -> dict[str, dict]:
    variables = render.template_variables(
        OUTPUTS, partition="aws", region=REGION, account_id=ACCOUNT, stage=STAGE, app_name=APP
    )
    files = render.policy_files(prod_config, STAGE)
    documents = render.render_policies(ROOT, prod_config, STAGE, variables)
    return {function: documents[name] for function, name in files.items()}


@pytest.fixture(scope="module")
def templates(prod_config: dict) -> dict[str, dict]:
    files = render.policy_files(prod_config, STAGE)
    return {function: render.load_json(ROOT / render.TEMPLATE_DIR / name) for function, name in files.items()}


def functions_in_config(prod_config: dict) -> list[str]:
    return sorted(prod_config["stages"][STAGE]["lambda_functions"])


# -- the derivation itself ----------------------------------------------------------------------
def test_the_derivation_finds_the_calls_the_code_makes(calls):
    found = {(c.module, c.action) for c in calls}
    assert ("chalicelib/loader/sources.py", "s3:GetObject") in found
    assert ("chalicelib/loader/sources.py", "s3:ListBucket") in found  # through a paginator
    assert ("chalicelib/writers/firehose.py", "firehose:PutRecordBatch") in found


def test_the_derivation_would_see_a_new_call(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import boto3\n"
        "def f():\n"
        "    c = boto3.client('sqs')\n"
        "    c.delete_message(QueueUrl='q', ReceiptHandle='r')\n"
        "    for page in c.get_paginator('list_queues').paginate():\n"
        "        pass\n"
    )
    found = {(c.module, c.action) for c in aws_calls({**source_files(), "chalicelib/probe.py": probe})}
    assert ("chalicelib/probe.py", "sqs:DeleteMessage") in found
    assert ("chalicelib/probe.py", "sqs:ListQueues") in found


def test_every_module_that_calls_aws_runs_somewhere_known(calls):
    for call in calls:
        assert functions_running(call.module), call


# -- each function: allowed what it needs ----------------------------------------------------------
def test_every_function_of_the_app_has_its_own_policy(app_module, prod_config):
    configured = set(functions_in_config(prod_config))
    assert function_names(app_module) <= configured
    assert configured - function_names(app_module) <= set(PENDING_FUNCTIONS)
    files = render.policy_files(prod_config, STAGE)
    assert len(set(files.values())) == len(files), "two functions share a policy file"


@pytest.mark.parametrize("function", ["api_handler", "load_writes", "reconcile_writes", "migrate"])
def test_each_need_is_allowed_by_that_functions_policy(function, prod_config, data_template, calls, policies):
    policy = policies[function]
    for need in needs_of(function, prod_config, data_template, calls):
        for resource in need.resources:
            assert allows(policy, need.action, resource, dict(need.context)), (
                function,
                need.action,
                resource,
                need.why,
            )


@pytest.mark.parametrize("function", ["api_handler", "load_writes", "reconcile_writes", "migrate"])
def test_each_policy_allows_nothing_else(function, prod_config, data_template, calls, policies):
    needed = {n.action for n in needs_of(function, prod_config, data_template, calls)}
    granted = policy_actions(policies[function])
    assert granted - needed == set(), f"{function} is granted actions it does not use"
    assert needed - granted == set()


def test_functions_get_only_their_own_data(prod_config, data_template, calls, policies):
    bucket = OUTPUTS["WritesBucketArn"]
    api, loader, reconciler = policies["api_handler"], policies["load_writes"], policies["reconcile_writes"]
    # Readers never touch the bucket; writers never read it.
    assert not allows(api, "s3:GetObject", f"{bucket}/writes/x", {})
    # The loader reads write commands, not Firehose's error records, nor another bucket.
    assert allows(loader, "s3:GetObject", f"{bucket}/writes/2024/01/01/00/x", {})
    assert not allows(loader, "s3:GetObject", f"{bucket}/errors/processing-failed/x", {})
    assert not allows(loader, "s3:GetObject", "arn:aws:s3:::another-bucket/writes/x", {})
    # KMS only through the service that holds the data, for that data.
    kms = OUTPUTS["KmsKeyArn"]
    assert not allows(loader, "kms:Decrypt", kms, {})
    assert not allows(
        loader,
        "kms:Decrypt",
        kms,
        {"kms:ViaService": f"s3.{REGION}.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::other"},
    )
    # Only the loader may send to the failure queue; only the API handler may write to Firehose.
    queue = OUTPUTS["LoaderFailureQueueArn"]
    assert not allows(api, "sqs:SendMessage", queue, {}) and not allows(reconciler, "sqs:SendMessage", queue, {})
    assert not allows(loader, "firehose:PutRecordBatch", OUTPUTS["FirehoseStreamArn"], {})
    # Each function writes its own log group only.
    other = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{function_name('load_writes')}:log-stream:x"
    assert not allows(api, "logs:PutLogEvents", other, {})


# -- the shape of every policy --------------------------------------------------------------------
def statements(document: dict) -> Iterator[dict]:
    yield from as_list(document["Statement"])


@pytest.mark.parametrize("function", ["api_handler", "load_writes", "reconcile_writes", "migrate"])
def test_no_wildcard_actions_and_any_resource_only_where_aws_requires_it(function, templates, policies):
    for statement in statements(templates[function]):
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        actions, resources = as_list(statement["Action"]), as_list(statement["Resource"])
        for action in actions:
            assert "*" not in action and "?" not in action, (function, action)
        if "*" in resources:
            # The documented exceptions: X-Ray, and the ENI actions as AWS's own VPC policy has them.
            assert resources == ["*"] and set(actions) <= ANY_RESOURCE_ACTIONS, (function, statement["Sid"])
            continue
        for resource in resources:
            # Built from the stack's outputs, or an ARN in this account and region.
            names = render.placeholders(resource)
            from_outputs = bool(names - OWN_VALUES)
            assert from_outputs or {"Region", "AccountId"} <= names, (function, resource)


@pytest.mark.parametrize("function", ["api_handler", "load_writes", "reconcile_writes", "migrate"])
def test_rendered_resources_are_the_stacks(function, policies):
    stack_arns = [v for v in OUTPUTS.values() if v.startswith("arn:")]
    own = [f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{function_name(function)}"]
    for statement in statements(policies[function]):
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                continue
            assert any(resource.startswith(arn) for arn in stack_arns) or any(
                resource == o or resource.startswith(o + ":") for o in own
            ), resource


def test_policy_templates_name_only_outputs_the_data_stack_has(prod_config):
    check_templates(ROOT, prod_config, STAGE)


def test_the_test_outputs_match_the_data_template():
    assert set(OUTPUTS) == template_output_names(ROOT / "infrastructure" / "data.yaml") - CONDITIONAL_OUTPUTS
