"""Architecture facts of the CloudFormation templates in infrastructure/.

These read the templates as data (cfn-lint's YAML loader understands the short
intrinsic tags: ``!Ref X`` becomes ``{"Ref": "X"}``, ``!Sub`` ``{"Fn::Sub": ...}``,
``!GetAtt A.B`` ``{"Fn::GetAtt": ["A", "B"]}``) and check the properties whose loss
would break the contract: data that must never expire, TLS everywhere, nothing cached
across users at the edge, alarms that reach someone, and the outputs the deploy step
reads. The last tests run cfn-lint itself, which must report nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import load as load_cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infrastructure"
DATA = INFRA / "data.yaml"
EDGE = INFRA / "edge.yaml"

CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"


# ----------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def data() -> dict:
    return load_cfn_yaml(str(DATA))


@pytest.fixture(scope="module")
def edge() -> dict:
    return load_cfn_yaml(str(EDGE))


def of_type(template: dict, type_: str) -> dict[str, dict]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == type_}


def one_of_type(template: dict, type_: str) -> tuple[str, dict]:
    found = of_type(template, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def props(resource: dict) -> dict:
    return resource.get("Properties", {})


def is_ref(value: Any, name: str) -> bool:
    return isinstance(value, dict) and value.get("Ref") == name


def referenced(value: Any) -> set[str]:
    """Logical ids (and pseudo parameters) that a value refers to."""
    names: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref":
                names.add(inner)
            elif key == "Fn::GetAtt":
                target = inner[0] if isinstance(inner, list) else inner.split(".")[0]
                names.add(target)
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                names.update(m.split(".")[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text))
                if isinstance(inner, list):
                    names.update(referenced(inner[1]))
            else:
                names.update(referenced(inner))
    elif isinstance(value, list):
        for item in value:
            names.update(referenced(item))
    return names


def resolve(template: dict, value: Any) -> Any:
    """A literal, or the default of the parameter a ``Ref`` names."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        param = template.get("Parameters", {}).get(value["Ref"])
        assert param is not None and "Default" in param, f"no default for {value}"
        return param["Default"]
    return value


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def is_true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def statements(policy_document: dict) -> list[dict]:
    return as_list(policy_document["Statement"])


def security_group_ingress(template: dict, group: str) -> Iterator[dict]:
    """Every ingress rule of a group: inline ones and separate resources."""
    yield from props(template["Resources"][group]).get("SecurityGroupIngress", [])
    for res in of_type(template, "AWS::EC2::SecurityGroupIngress").values():
        if referenced(props(res)["GroupId"]) == {group}:
            yield props(res)


# --------------------------------------------------------------- the bucket
def writes_bucket(data: dict) -> dict:
    return data["Resources"]["WritesBucket"]


def test_bucket_blocks_all_public_access(data):
    block = props(writes_bucket(data))["PublicAccessBlockConfiguration"]
    for key in (
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ):
        assert is_true(block.get(key)), key


def test_bucket_is_encrypted_versioned_and_retained(data):
    bucket = writes_bucket(data)
    rules = props(bucket)["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in (
        "aws:kms",
        "AES256",
    )
    assert props(bucket)["VersioningConfiguration"]["Status"] == "Enabled"
    assert bucket.get("DeletionPolicy") == "RetainExceptOnCreate"
    assert bucket.get("UpdateReplacePolicy") == "Retain"


@pytest.mark.parametrize("type_", ["AWS::S3::Bucket", "AWS::KMS::Key", "AWS::Cognito::UserPool"])
def test_a_failed_first_create_leaves_nothing_behind_that_blocks_a_retry(data, type_):
    # Retained once the stack exists; deleted when its own creation rolls back, so the retry
    # does not fail on the bucket's name (Retain left it behind).
    for name, resource in of_type(data, type_).items():
        assert resource.get("DeletionPolicy") == "RetainExceptOnCreate", name


def test_protections_are_parameters_the_infra_step_turns_on_after_creation(data):
    p = props(master(data))
    assert is_ref(p["DeletionProtection"], "DatabaseDeletionProtection")
    assert data["Parameters"]["DatabaseDeletionProtection"]["Default"] == "false"


def test_bucket_policy_denies_requests_without_tls(data):
    policies = [
        p for p in of_type(data, "AWS::S3::BucketPolicy").values() if is_ref(props(p)["Bucket"], "WritesBucket")
    ]
    assert policies, "the writes bucket has no bucket policy"
    denies = [
        s
        for p in policies
        for s in statements(props(p)["PolicyDocument"])
        if s["Effect"] == "Deny"
        and str(s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"
    ]
    assert denies, "no statement denies aws:SecureTransport false"
    deny = denies[0]
    assert deny["Principal"] in ("*", {"AWS": "*"})
    assert "s3:*" in as_list(deny["Action"])
    resources = as_list(deny["Resource"])
    assert {"Fn::GetAtt": ["WritesBucket", "Arn"]} in resources
    assert {"Fn::Sub": "${WritesBucket.Arn}/*"} in resources


def test_lifecycle_moves_to_cheaper_storage_but_never_expires_current_versions(data):
    rules = props(writes_bucket(data))["LifecycleConfiguration"]["Rules"]
    for rule in rules:
        # Replay of any time range needs every object: no expiry of current versions.
        assert "ExpirationInDays" not in rule, rule["Id"]
        assert "ExpirationDate" not in rule, rule["Id"]
        assert "Expiration" not in rule, rule["Id"]
    transitions = {
        t["StorageClass"]: int(resolve(data, t["TransitionInDays"]))
        for rule in rules
        if rule["Status"] == "Enabled"
        for t in rule.get("Transitions", [])
    }
    assert transitions.get("STANDARD_IA") == 30
    assert transitions.get("GLACIER_IR", 0) >= transitions["STANDARD_IA"] + 30
    # Only classes that still answer GetObject at once (no restore before a replay).
    assert set(transitions) <= {"STANDARD_IA", "GLACIER_IR", "INTELLIGENT_TIERING"}


def test_chalice_owns_the_bucket_notification(data):
    # `chalice deploy` writes the notification configuration for on_s3_event and
    # would silently replace one set here.
    assert "NotificationConfiguration" not in props(writes_bucket(data))


# ----------------------------------------------------------------- Firehose
def test_firehose_delivers_gzip_objects_under_writes_prefix(data):
    _, stream = one_of_type(data, "AWS::KinesisFirehose::DeliveryStream")
    p = props(stream)
    assert p["DeliveryStreamType"] == "DirectPut"
    assert "DeliveryStreamEncryptionConfigurationInput" in p
    dest = p["ExtendedS3DestinationConfiguration"]
    # No expressions: Firehose appends its UTC YYYY/MM/DD/HH/ (CONTRACT.md section 4).
    assert dest["Prefix"] == "writes/"
    assert dest["ErrorOutputPrefix"].startswith("errors/")
    assert "!{firehose:error-output-type}" in dest["ErrorOutputPrefix"]
    assert dest["CompressionFormat"] == "GZIP"
    assert dest["BucketARN"] == {"Fn::GetAtt": ["WritesBucket", "Arn"]}
    hints = dest["BufferingHints"]
    assert is_ref(hints["SizeInMBs"], "FirehoseBufferSizeMB")
    assert is_ref(hints["IntervalInSeconds"], "FirehoseBufferIntervalSeconds")
    assert is_true(dest["CloudWatchLoggingOptions"]["Enabled"])


def test_firehose_role_is_scoped_to_its_bucket_key_and_log_stream(data):
    _, stream = one_of_type(data, "AWS::KinesisFirehose::DeliveryStream")
    role_ref = props(stream)["ExtendedS3DestinationConfiguration"]["RoleARN"]
    role_name = role_ref["Fn::GetAtt"][0]
    role = props(data["Resources"][role_name])
    principals = [s["Principal"]["Service"] for s in statements(role["AssumeRolePolicyDocument"])]
    assert principals == ["firehose.amazonaws.com"]
    allowed_targets = {
        "WritesBucket",
        "DataKey",
        "FirehoseLogGroup",
        "FirehoseLogStream",
        "AWS::Partition",
        "AWS::Region",
        "AWS::AccountId",
    }
    s3_resources = []
    for policy in role["Policies"]:
        for statement in statements(policy["PolicyDocument"]):
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                assert "*" not in action, action
            for resource in as_list(statement["Resource"]):
                assert resource != "*"
                assert referenced(resource) <= allowed_targets, resource
            if any(a.startswith("s3:") for a in as_list(statement["Action"])):
                s3_resources.extend(as_list(statement["Resource"]))
    assert {"Fn::GetAtt": ["WritesBucket", "Arn"]} in s3_resources
    assert {"Fn::Sub": "${WritesBucket.Arn}/*"} in s3_resources


# ----------------------------------------------------------------- database
def master(data: dict) -> dict:
    instances = of_type(data, "AWS::RDS::DBInstance")
    masters = [r for r in instances.values() if "SourceDBInstanceIdentifier" not in props(r)]
    assert len(masters) == 1
    return masters[0]


def test_master_is_encrypted_multi_az_and_protected(data):
    m = master(data)
    p = props(m)
    assert p["Engine"] == "mysql"
    assert str(p["EngineVersion"]) == "8.4"  # LTS, in standard support (8.0 left it 2026-07-31)
    assert p["EngineLifecycleSupport"] == "open-source-rds-extended-support-disabled"
    assert is_true(p["StorageEncrypted"])
    assert is_true(p["MultiAZ"])
    assert not is_true(p.get("PubliclyAccessible", False))
    assert int(resolve(data, p["BackupRetentionPeriod"])) >= 1  # replicas need binlogs
    assert m.get("DeletionPolicy") == "Snapshot"
    # Credentials come from the secret, never a literal.
    assert "{{resolve:secretsmanager:${DatabaseSecret}" in p["MasterUserPassword"]["Fn::Sub"]


def test_parameter_group_settings(data):
    _, group = one_of_type(data, "AWS::RDS::DBParameterGroup")
    p = props(group)
    assert p["Family"] == "mysql8.4"
    params = {k: str(v) for k, v in p["Parameters"].items()}
    assert params["local_infile"] == "1"
    assert params["require_secure_transport"] == "1"
    assert params["performance_schema"] == "1"
    assert params["binlog_format"] == "ROW"
    assert is_ref(props(master(data))["DBParameterGroupName"], "DatabaseParameterGroup")


def test_at_least_two_read_replicas_of_the_master(data):
    master_name = next(
        name
        for name, r in of_type(data, "AWS::RDS::DBInstance").items()
        if "SourceDBInstanceIdentifier" not in props(r)
    )
    replicas = [
        r
        for r in of_type(data, "AWS::RDS::DBInstance").values()
        if is_ref(props(r).get("SourceDBInstanceIdentifier"), master_name)
    ]
    assert len(replicas) >= 2
    for replica in replicas:
        assert not is_true(props(replica).get("PubliclyAccessible", False))


def test_secret_is_generated_and_attached_to_the_master(data):
    _, secret = one_of_type(data, "AWS::SecretsManager::Secret")
    assert props(secret)["GenerateSecretString"]["GenerateStringKey"] == "password"
    _, attachment = one_of_type(data, "AWS::SecretsManager::SecretTargetAttachment")
    assert is_ref(props(attachment)["SecretId"], "DatabaseSecret")
    assert is_ref(props(attachment)["TargetId"], "DatabaseMaster")


def test_proxy_requires_tls_and_fronts_only_the_master(data):
    _, proxy = one_of_type(data, "AWS::RDS::DBProxy")
    p = props(proxy)
    assert p["EngineFamily"] == "MYSQL"
    assert is_true(p["RequireTLS"])
    auth = p["Auth"][0]
    assert auth["AuthScheme"] == "SECRETS"
    assert is_ref(auth["SecretArn"], "DatabaseSecret")
    _, target = one_of_type(data, "AWS::RDS::DBProxyTargetGroup")
    assert props(target)["DBInstanceIdentifiers"] == [{"Ref": "DatabaseMaster"}]
    role = props(data["Resources"][p["RoleArn"]["Fn::GetAtt"][0]])
    actions = {
        a for policy in role["Policies"] for s in statements(policy["PolicyDocument"]) for a in as_list(s["Action"])
    }
    assert actions == {"secretsmanager:GetSecretValue", "kms:Decrypt"}


# ------------------------------------------------------------------ network
def test_private_network_without_nat_uses_vpc_endpoints(data):
    for type_ in ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway"):
        assert not of_type(data, type_), type_
    subnets = of_type(data, "AWS::EC2::Subnet")
    zones = {str(props(s)["AvailabilityZone"]) for s in subnets.values()}
    assert 2 <= len(subnets) <= 3 and len(zones) == len(subnets)
    endpoints = {
        props(e)["ServiceName"]["Fn::Sub"].rsplit(".", 1)[-1]: props(e)
        for e in of_type(data, "AWS::EC2::VPCEndpoint").values()
    }
    assert endpoints["s3"]["VpcEndpointType"] == "Gateway"
    for service in ("kinesis-firehose", "secretsmanager"):
        assert endpoints[service]["VpcEndpointType"] == "Interface"
        assert is_true(endpoints[service]["PrivateDnsEnabled"])


def test_database_accepts_3306_only_from_lambda_and_proxy(data):
    rules = list(security_group_ingress(data, "DatabaseSecurityGroup"))
    sources = set()
    for rule in rules:
        assert "CidrIp" not in rule and "CidrIpv6" not in rule
        assert (int(rule["FromPort"]), int(rule["ToPort"])) == (3306, 3306)
        sources |= referenced(rule["SourceSecurityGroupId"])
    assert sources == {"LambdaSecurityGroup", "ProxySecurityGroup"}


def test_proxy_cache_and_endpoints_accept_only_their_clients(data):
    expectations = {
        "ProxySecurityGroup": (3306, {"LambdaSecurityGroup"}),
        "CacheSecurityGroup": (6379, {"LambdaSecurityGroup"}),
        "EndpointSecurityGroup": (443, {"LambdaSecurityGroup", "ProxySecurityGroup"}),
    }
    for group, (port, allowed) in expectations.items():
        rules = list(security_group_ingress(data, group))
        assert rules, group
        for rule in rules:
            assert "CidrIp" not in rule, group
            assert (int(rule["FromPort"]), int(rule["ToPort"])) == (port, port), group
            assert referenced(rule["SourceSecurityGroupId"]) <= allowed, group
        assert "LambdaSecurityGroup" in {n for r in rules for n in referenced(r["SourceSecurityGroupId"])}


# ---------------------------------------------------------- identity, cache
def test_user_pool_client_and_admins_group(data):
    _, pool = one_of_type(data, "AWS::Cognito::UserPool")
    p = props(pool)
    assert p["UsernameAttributes"] == ["email"]
    password = p["Policies"]["PasswordPolicy"]
    assert int(password["MinimumLength"]) >= 12
    for key in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"):
        assert is_true(password[key]), key
    _, client = one_of_type(data, "AWS::Cognito::UserPoolClient")
    c = props(client)
    assert not is_true(c["GenerateSecret"])
    assert set(c["ExplicitAuthFlows"]) == {"ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    _, group = one_of_type(data, "AWS::Cognito::UserPoolGroup")
    assert props(group)["GroupName"] == "admins"


def test_cache_is_optional_and_encrypted_in_transit(data):
    assert data["Parameters"]["EnableCache"]["Default"] in ("false", "true")
    _, cache = one_of_type(data, "AWS::ElastiCache::ReplicationGroup")
    assert cache.get("Condition") == "CacheEnabled"
    assert is_true(props(cache)["TransitEncryptionEnabled"])
    assert data["Outputs"]["CacheEndpoint"].get("Condition") == "CacheEnabled"


def test_failure_queue_and_alarm_topic_are_encrypted(data):
    _, queue = one_of_type(data, "AWS::SQS::Queue")
    assert is_true(props(queue).get("SqsManagedSseEnabled")) or "KmsMasterKeyId" in props(queue)
    _, topic = one_of_type(data, "AWS::SNS::Topic")
    assert "KmsMasterKeyId" in props(topic)
    _, subscription = one_of_type(data, "AWS::SNS::Subscription")
    assert subscription.get("Condition") == "HasAlarmEmail"


# ------------------------------------------------------------------- alarms
def alarms(data: dict) -> dict[str, dict]:
    return {name: props(a) for name, a in of_type(data, "AWS::CloudWatch::Alarm").items()}


def test_every_alarm_notifies_the_alarm_topic(data):
    assert alarms(data)
    for name, alarm in alarms(data).items():
        assert {"Ref": "AlarmTopic"} in alarm.get("AlarmActions", []), name


def test_alarms_cover_the_failure_modes(data):
    seen = {(a["Namespace"], a["MetricName"]): a for a in alarms(data).values()}
    for metric in (
        ("AWS/Firehose", "DeliveryToS3.Success"),
        ("AWS/Firehose", "DeliveryToS3.DataFreshness"),
        ("AWS/Lambda", "Errors"),
        ("Sluice", "ReconcilerBacklog"),
        ("Sluice", "PoisonedObjects"),
        ("AWS/RDS", "ReplicaLag"),
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    ):
        assert metric in seen, metric

    def dims(alarm: dict) -> dict:
        return {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}

    lambda_functions = {
        dims(a)["FunctionName"]["Fn::Sub"] for a in alarms(data).values() if a["MetricName"] == "Errors"
    }
    assert "sluice-${Stage}-load_writes" in lambda_functions
    backlog = seen[("Sluice", "ReconcilerBacklog")]
    assert is_ref(dims(backlog)["Stage"], "Stage")
    poisoned = seen[("Sluice", "PoisonedObjects")]  # emitted by the reconciler (chalicelib.loader.reconciler)
    assert is_ref(dims(poisoned)["Stage"], "Stage")
    assert (poisoned["Threshold"], poisoned["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    lagged = {dims(a)["DBInstanceIdentifier"]["Ref"] for a in alarms(data).values() if a["MetricName"] == "ReplicaLag"}
    replicas = {
        name for name, r in of_type(data, "AWS::RDS::DBInstance").items() if "SourceDBInstanceIdentifier" in props(r)
    }
    assert lagged == replicas
    api = seen[("AWS/ApiGateway", "5XXError")]
    assert resolve(data, dims(api)["ApiName"]) == "sluice"
    for name in ("DeliveryToS3.Success", "DeliveryToS3.DataFreshness"):
        assert is_ref(dims(seen[("AWS/Firehose", name)])["DeliveryStreamName"], "WritesDeliveryStream")


# ------------------------------------------------------------------ outputs
DATA_OUTPUTS = {
    "UserPoolArn",
    "UserPoolId",
    "UserPoolClientId",
    "WritesBucketName",
    "WritesBucketArn",
    "FirehoseStreamName",
    "FirehoseStreamArn",
    "DatabaseSecretArn",
    "ProxyEndpoint",
    "MasterEndpoint",
    "ReplicaEndpoints",
    "LambdaSecurityGroupId",
    "PrivateSubnetIds",
    "CacheEndpoint",
    "LoaderFailureQueueArn",
    "AlarmTopicArn",
    "KmsKeyArn",
    "ApiWebAclArn",
}
EDGE_OUTPUTS = {"DistributionDomainName", "DistributionId", "WebAclArn"}


@pytest.mark.parametrize("template_name, expected", [("data", DATA_OUTPUTS), ("edge", EDGE_OUTPUTS)])
def test_outputs_exist_and_are_exported_under_the_stack_name(request, template_name, expected):
    template = request.getfixturevalue(template_name)
    outputs = template["Outputs"]
    assert expected <= set(outputs), expected - set(outputs)
    for name, output in outputs.items():
        assert output["Export"]["Name"] == {"Fn::Sub": "${AWS::StackName}-" + name}


def test_list_outputs_are_comma_separated(data):
    for name in ("PrivateSubnetIds", "ReplicaEndpoints"):
        assert data["Outputs"][name]["Value"]["Fn::Join"][0] == ","


# --------------------------------------------------------------------- edge
def test_edge_stack_is_pinned_to_us_east_1(edge):
    assert "us-east-1" in edge["Description"]
    assertions = [a for rule in edge["Rules"].values() for a in rule["Assertions"]]
    assert {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]} in [a["Assert"] for a in assertions]


def test_edge_parameters(edge):
    params = edge["Parameters"]
    assert {"ApiId", "ApiRegion", "ApiStage", "RateLimit"} <= set(params)
    assert params["ApiStage"]["Default"] == "api"
    assert int(params["RateLimit"]["Default"]) == 2000


def test_web_acl_has_managed_rule_groups_and_a_rate_rule(edge):
    _, acl = one_of_type(edge, "AWS::WAFv2::WebACL")
    p = props(acl)
    assert p["Scope"] == "CLOUDFRONT"
    assert is_true(p["VisibilityConfig"]["CloudWatchMetricsEnabled"])
    rules = p["Rules"]
    priorities = [int(r["Priority"]) for r in rules]
    assert len(set(priorities)) == len(priorities)
    managed = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in rules
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert {
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesSQLiRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
    } <= managed
    rate = [r for r in rules if "RateBasedStatement" in r["Statement"]]
    assert len(rate) == 1
    assert "Block" in rate[0]["Action"]
    statement = rate[0]["Statement"]["RateBasedStatement"]
    assert is_ref(statement["Limit"], "RateLimit")
    assert statement["AggregateKeyType"] == "IP"
    assert int(statement.get("EvaluationWindowSec", 300)) == 300
    for rule in rules:
        assert is_true(rule["VisibilityConfig"]["CloudWatchMetricsEnabled"]), rule["Name"]
        assert is_true(rule["VisibilityConfig"]["SampledRequestsEnabled"]), rule["Name"]
        if "ManagedRuleGroupStatement" in rule["Statement"]:
            # Managed groups label what they match; our last rule blocks on the labels.
            assert rule["OverrideAction"] == {"Count": {}}, rule["Name"]


def label_keys(statement: Any) -> list[str]:
    if isinstance(statement, dict):
        if "LabelMatchStatement" in statement:
            return [statement["LabelMatchStatement"]["Key"]]
        return [k for value in statement.values() for k in label_keys(value)]
    if isinstance(statement, list):
        return [k for value in statement for k in label_keys(value)]
    return []


# Every rule of the AWS managed rule groups the edge web ACL uses, as the AWS WAF guide lists them
# ("Baseline rule groups": AWSManagedRulesCommonRuleSet, AWSManagedRulesKnownBadInputsRuleSet;
# "Use-case specific rule groups": AWSManagedRulesSQLiRuleSet): rule name as AWS spells it -> the
# label it adds. Current versions: `aws wafv2 describe-managed-rule-group --scope CLOUDFRONT
# --region us-east-1 --vendor-name AWS --name GROUP` (Rules and AvailableLabels).
MANAGED_RULES: dict[str, tuple[str, dict[str, str]]] = {
    "AWSManagedRulesCommonRuleSet": (
        "awswaf:managed:aws:core-rule-set:",
        {
            "NoUserAgent_HEADER": "NoUserAgent_Header",
            "UserAgent_BadBots_HEADER": "BadBots_Header",
            "SizeRestrictions_QUERYSTRING": "SizeRestrictions_QueryString",
            "SizeRestrictions_Cookie_HEADER": "SizeRestrictions_Cookie_Header",
            "SizeRestrictions_BODY": "SizeRestrictions_Body",
            "SizeRestrictions_URIPATH": "SizeRestrictions_URIPath",
            "EC2MetaDataSSRF_BODY": "EC2MetaDataSSRF_Body",
            "EC2MetaDataSSRF_COOKIE": "EC2MetaDataSSRF_Cookie",
            "EC2MetaDataSSRF_URIPATH": "EC2MetaDataSSRF_URIPath",
            "EC2MetaDataSSRF_QUERYARGUMENTS": "EC2MetaDataSSRF_QueryArguments",
            "GenericLFI_QUERYARGUMENTS": "GenericLFI_QueryArguments",
            "GenericLFI_URIPATH": "GenericLFI_URIPath",
            "GenericLFI_BODY": "GenericLFI_Body",
            "RestrictedExtensions_URIPATH": "RestrictedExtensions_URIPath",
            "RestrictedExtensions_QUERYARGUMENTS": "RestrictedExtensions_QueryArguments",
            "GenericRFI_QUERYARGUMENTS": "GenericRFI_QueryArguments",
            "GenericRFI_BODY": "GenericRFI_Body",
            "GenericRFI_URIPATH": "GenericRFI_URIPath",
            "CrossSiteScripting_COOKIE": "CrossSiteScripting_Cookie",
            "CrossSiteScripting_QUERYARGUMENTS": "CrossSiteScripting_QueryArguments",
            "CrossSiteScripting_BODY": "CrossSiteScripting_Body",
            "CrossSiteScripting_URIPATH": "CrossSiteScripting_URIPath",
        },
    ),
    "AWSManagedRulesSQLiRuleSet": (
        "awswaf:managed:aws:sql-database:",
        {
            "SQLi_QUERYARGUMENTS": "SQLi_QueryArguments",
            "SQLiExtendedPatterns_QUERYARGUMENTS": "SQLiExtendedPatterns_QueryArguments",
            "SQLi_BODY": "SQLi_Body",
            "SQLiExtendedPatterns_BODY": "SQLiExtendedPatterns_Body",
            "SQLi_COOKIE": "SQLi_Cookie",
        },
    ),
    "AWSManagedRulesKnownBadInputsRuleSet": (
        "awswaf:managed:aws:known-bad-inputs:",
        {
            "JavaDeserializationRCE_HEADER": "JavaDeserializationRCE_Header",
            "JavaDeserializationRCE_BODY": "JavaDeserializationRCE_Body",
            "JavaDeserializationRCE_URIPATH": "JavaDeserializationRCE_URIPath",
            "JavaDeserializationRCE_QUERYSTRING": "JavaDeserializationRCE_QueryString",
            "Host_localhost_HEADER": "Host_Localhost_Header",
            "PROPFIND_METHOD": "Propfind_Method",
            "ExploitablePaths_URIPATH": "ExploitablePaths_URIPath",
            "Log4JRCE_HEADER": "Log4JRCE_Header",
            "Log4JRCE_QUERYSTRING": "Log4JRCE_QueryString",
            "Log4JRCE_BODY": "Log4JRCE_Body",
            "Log4JRCE_URIPATH": "Log4JRCE_URIPath",
        },
    ),
}
# The decision for every body rule (docs/deploy.md, "WAF's answers", says why for each).
BODY_RULE_DECISIONS = {
    "SizeRestrictions_BODY": "count",
    "CrossSiteScripting_BODY": "count",
    "GenericRFI_BODY": "count",
    "GenericLFI_BODY": "count",
    "EC2MetaDataSSRF_BODY": "count",
    "SQLi_BODY": "count",
    "SQLiExtendedPatterns_BODY": "count",
    "JavaDeserializationRCE_BODY": "block",
    "Log4JRCE_BODY": "block",
}


def managed_labels() -> dict[str, str]:
    """Rule name -> its full label, every rule of every group."""
    return {rule: prefix + label for prefix, rules in MANAGED_RULES.values() for rule, label in rules.items()}


def waf_rule(edge: dict, name: str) -> dict:
    _, acl = one_of_type(edge, "AWS::WAFv2::WebACL")
    (rule,) = [r for r in props(acl)["Rules"] if r["Name"] == name]
    return rule


def test_every_managed_group_in_use_has_every_body_rule_decided(edge):
    _, acl = one_of_type(edge, "AWS::WAFv2::WebACL")
    groups = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in props(acl)["Rules"]
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert groups == set(MANAGED_RULES)
    body_rules = {rule for _, rules in MANAGED_RULES.values() for rule in rules if rule.endswith("_BODY")}
    assert body_rules == set(BODY_RULE_DECISIONS)
    assert set(BODY_RULE_DECISIONS.values()) <= {"count", "block"}


def test_counted_body_rules_never_block_and_every_other_rule_does(edge):
    labels = managed_labels()
    listed = set(label_keys(waf_rule(edge, "block-managed-matches")["Statement"]))
    blocked, excepted = waf_rule(edge, "block-other-managed-matches")["Statement"]["AndStatement"]["Statements"]
    counted = {labels[rule] for rule, decision in BODY_RULE_DECISIONS.items() if decision == "count"}
    # Counted body rules: named nowhere but in the exception of the catch-all rule.
    assert set(label_keys(excepted["NotStatement"])) == counted
    assert not listed & counted
    # Every other rule blocks by its own label, whatever else the request matched.
    assert listed == set(labels.values()) - counted
    # A rule AWS adds later blocks through its group's namespace.
    assert set(label_keys(blocked)) == {prefix for prefix, _ in MANAGED_RULES.values()}


def test_docs_name_every_body_rule_with_its_decision():
    text = (ROOT / "docs" / "deploy.md").read_text()
    for rule, decision in BODY_RULE_DECISIONS.items():
        assert re.search(rf"\| `{rule}` \|[^\n]*\| {decision} \|", text), rule


def blocks(acl: dict) -> list[dict]:
    p = props(acl)
    out = [r["Action"]["Block"] for r in p["Rules"] if "Block" in r.get("Action", {})]
    if "Block" in p["DefaultAction"]:
        out.append(p["DefaultAction"]["Block"])
    return out


@pytest.mark.parametrize("template_name", ["edge", "data"])
def test_every_waf_block_answers_in_the_contracts_error_shape(request, template_name):
    import json

    _, acl = one_of_type(request.getfixturevalue(template_name), "AWS::WAFv2::WebACL")
    bodies = props(acl)["CustomResponseBodies"]
    assert blocks(acl)
    for block in blocks(acl):
        body = bodies[block["CustomResponse"]["CustomResponseBodyKey"]]
        assert body["ContentType"] == "APPLICATION_JSON"
        document = json.loads(body["Content"])
        assert set(document) == {"error", "message"}
        expected = {403: "forbidden", 429: "throttled"}[int(block["CustomResponse"]["ResponseCode"])]
        assert document["error"] == expected


def test_the_api_stage_answers_only_requests_carrying_cloudfronts_secret(data, edge):
    _, acl = one_of_type(data, "AWS::WAFv2::WebACL")
    p = props(acl)
    assert p["Scope"] == "REGIONAL"
    assert "Block" in p["DefaultAction"]
    (allow,) = p["Rules"]
    assert "Allow" in allow["Action"]
    statement = allow["Statement"]["Fn::If"]
    assert statement[0] == "HasPreviousOrigin"  # during a rotation both values pass
    (single,) = [statement[2]["ByteMatchStatement"]]
    assert single["FieldToMatch"] == {"SingleHeader": {"Name": "x-origin-verify"}}
    assert single["PositionalConstraint"] == "EXACTLY"
    assert is_ref(single["SearchString"], "OriginVerifyCurrent")
    both = [s["ByteMatchStatement"]["SearchString"] for s in statement[1]["OrStatement"]["Statements"]]
    assert both == [{"Ref": "OriginVerifyCurrent"}, {"Ref": "OriginVerifyPrevious"}]
    for name in ("OriginVerifyCurrent", "OriginVerifyPrevious"):
        assert is_true(data["Parameters"][name]["NoEcho"])
    (origin,) = distribution_config(edge)["Origins"]
    (header,) = origin["OriginCustomHeaders"]
    assert header["HeaderName"].lower() == "x-origin-verify"
    assert is_ref(header["HeaderValue"], "OriginVerifyValue")
    assert is_true(edge["Parameters"]["OriginVerifyValue"]["NoEcho"])


def test_the_data_stack_creates_the_read_cache_by_default(data):
    assert data["Parameters"]["EnableCache"]["Default"] == "true"


def distribution_config(edge: dict) -> dict:
    _, dist = one_of_type(edge, "AWS::CloudFront::Distribution")
    return props(dist)["DistributionConfig"]


def test_distribution_reaches_the_api_stage_over_tls_only(edge):
    config = distribution_config(edge)
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {"Fn::Sub": "${ApiId}.execute-api.${ApiRegion}.amazonaws.com"}
    assert origin["OriginPath"] == {"Fn::Sub": "/${ApiStage}"}
    custom = origin["CustomOriginConfig"]
    assert custom["OriginProtocolPolicy"] == "https-only"
    assert custom["OriginSSLProtocols"] == ["TLSv1.2"]
    behavior = config["DefaultCacheBehavior"]
    assert behavior["TargetOriginId"] == origin["Id"]
    assert behavior["ViewerProtocolPolicy"] in ("https-only", "redirect-to-https")
    assert set(behavior["AllowedMethods"]) == {
        "GET",
        "HEAD",
        "OPTIONS",
        "PUT",
        "POST",
        "PATCH",
        "DELETE",
    }
    assert config["WebACLId"] == {"Fn::GetAtt": ["WebAcl", "Arn"]}


# Paths that may be cached at the edge (CONTRACT.md section 3); every other path is authenticated.
PUBLIC_CACHEABLE_PATHS = {"/health", "/openapi.json"}
# The status codes CloudFront caches as errors whatever the cache policy ("HTTP 4xx and 5xx status
# codes that CloudFront caches", 10 s by default) and for which an ErrorCachingMinTTL can be set.
CLOUDFRONT_CACHED_ERRORS = {400, 403, 404, 405, 414, 416, 500, 501, 502, 503, 504}


def can_cache(edge: dict, behavior: dict) -> bool:
    """Whether a cache behaviour can keep an answer: anything but the managed CachingDisabled policy
    (a policy of our own, another managed one, or legacy TTL settings) can."""
    if "ForwardedValues" in behavior or any(k in behavior for k in ("MinTTL", "DefaultTTL", "MaxTTL")):
        return True
    policy = behavior["CachePolicyId"]
    choices = policy["Fn::If"][1:] if isinstance(policy, dict) and "Fn::If" in policy else [policy]
    return any(choice != CACHING_DISABLED for choice in choices)


def test_no_path_but_health_and_openapi_can_be_cached_at_the_edge(edge):
    config = distribution_config(edge)
    behaviors = [("*", config["DefaultCacheBehavior"])]
    behaviors += [(b["PathPattern"], b) for b in config.get("CacheBehaviors", [])]
    cacheable = {pattern for pattern, behavior in behaviors if can_cache(edge, behavior)}
    assert cacheable <= PUBLIC_CACHEABLE_PATHS, f"{sorted(cacheable - PUBLIC_CACHEABLE_PATHS)} can be cached"
    for pattern, behavior in behaviors:
        if not can_cache(edge, behavior):
            # The caller's token still reaches API Gateway (allowed with CachingDisabled only).
            assert behavior["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST, pattern
    assert "ReadCacheTtlSeconds" not in edge["Parameters"]
    assert not of_type(edge, "AWS::CloudFront::CachePolicy")


def test_errors_are_never_served_from_the_edge_cache(edge):
    config = distribution_config(edge)
    errors = {int(e["ErrorCode"]): e for e in config["CustomErrorResponses"]}
    assert set(errors) == CLOUDFRONT_CACHED_ERRORS
    for error in errors.values():
        assert int(error["ErrorCachingMinTTL"]) == 0
        assert "ResponsePagePath" not in error  # the API's own JSON body passes through


def test_distribution_adds_security_headers(edge):
    behavior = distribution_config(edge)["DefaultCacheBehavior"]
    name = behavior["ResponseHeadersPolicyId"]["Ref"]
    config = props(edge["Resources"][name])["ResponseHeadersPolicyConfig"]
    headers = config["SecurityHeadersConfig"]
    hsts = headers["StrictTransportSecurity"]
    assert int(hsts["AccessControlMaxAgeSec"]) >= 31536000
    assert "ContentTypeOptions" in headers
    assert headers["FrameOptions"]["FrameOption"] in ("DENY", "SAMEORIGIN")


# ------------------------------------------------------------------ cfn-lint
@pytest.mark.parametrize(
    "template, regions",
    [
        (DATA, ["us-east-1", "eu-west-1", "ap-southeast-2"]),
        (EDGE, ["us-east-1"]),
    ],
    ids=["data", "edge"],
)
def test_cfn_lint_reports_nothing(template, regions):
    # The same cfn-lint the CI uses, from this interpreter's environment.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
            "--regions",
            *regions,
            "--",
            str(template),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
