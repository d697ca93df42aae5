"""Every alarm in the templates can fire, and fires only on what it says.

Each `AWS::CloudWatch::Alarm` of infrastructure/*.yaml (and each metric inside a metric-math alarm)
is checked against how often its metric is emitted:

- Sluice's own metrics (namespace `Sluice`, CloudWatch Embedded Metric Format) are found by
  running the code that emits them here: a request through the app, a reconciler run that loads
  an object, and a reconciler run whose database is down. A metric on the request or load lines
  comes with events (requests, loads); one on every reconciler line comes once per run, at its
  end: runs start at the schedule app.py declares and last at most the function's timeout
  (.chalice/templates/stage-prod.json), so two datapoints are at most schedule + timeout + a
  minute of scheduling apart. An alarm on a Sluice metric nothing emits (with its dimensions)
  fails here.
- AWS's metrics: the table `AWS_METRICS` below, each with the documentation it rests on.

The rules (`problems`): an event metric has no datapoint when nothing happens, so a missing period
must not breach (`notBreaching`); for a regular metric at most G seconds apart, a run of empty
periods of length P is at most ceil(G / P) - 1 long, so in N periods at least N // ceil(G / P)
hold a datapoint, which must be at least DatapointsToAlarm, or the alarm can never fire when the
metric breaches all the time; `breaching` is only for a metric that fills every period (P >= G)
even when its source is in trouble, else a healthy metric alarms. Periods are whole minutes, and
an alarm looks back at most one day.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import load as load_cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = {name: ROOT / "infrastructure" / f"{name}.yaml" for name in ("data", "edge")}
SCHEDULE_SLACK_SECONDS = 60  # EventBridge starts a scheduled run within a minute of its time
DAY = 86_400


@dataclass(frozen=True)
class Emission:
    """How a metric reaches CloudWatch."""

    every: int | None  # at most this many seconds between datapoints; None: only when events happen
    dimensions: frozenset[frozenset[str]]  # the dimension sets it is published under
    always: bool  # published even when what it measures is in trouble (else a gap is no news)
    source: str  # the code that emits it, or the AWS documentation this rests on


def dims(*sets: tuple[str, ...]) -> frozenset[frozenset[str]]:
    return frozenset(frozenset(names) for names in sets)


LAMBDA = "Lambda Developer Guide, 'Types of metrics for Lambda functions' (only when invoked)"
RDS = "RDS User Guide, 'Amazon CloudWatch metrics for Amazon RDS' (sent every minute)"
ELASTICACHE = "ElastiCache User Guide, 'Host-level metrics' / 'Metrics for Valkey and Redis OSS' (every 60 s, per node)"
WAF = "AWS WAF Developer Guide, 'AWS WAF metrics and dimensions' (once a minute, while requests are seen)"
CLOUDFRONT = "CloudFront Developer Guide, 'Default CloudFront distribution metrics' (us-east-1, Region=Global, per minute with requests)"
AWS_METRICS: dict[tuple[str, str], Emission] = {
    ("AWS/ApiGateway", "5XXError"): Emission(
        None,
        dims(("ApiName",), ("ApiName", "Stage"), ("ApiName", "Method", "Resource", "Stage")),
        False,
        "API Gateway Developer Guide, 'Amazon API Gateway dimensions and metrics' (per request)",
    ),
    ("AWS/Lambda", "Errors"): Emission(None, dims(("FunctionName",)), False, LAMBDA),
    ("AWS/Lambda", "Throttles"): Emission(None, dims(("FunctionName",)), False, LAMBDA),
    ("AWS/Firehose", "DeliveryToS3.Success"): Emission(
        None, dims(("DeliveryStreamName",)), False, "Firehose Developer Guide, 'Data delivery metrics' (per delivery)"
    ),
    ("AWS/Firehose", "DeliveryToS3.DataFreshness"): Emission(
        None, dims(("DeliveryStreamName",)), False, "Firehose Developer Guide, 'Data delivery metrics' (per delivery)"
    ),
    ("AWS/RDS", "ReplicaLag"): Emission(60, dims(("DBInstanceIdentifier",)), True, RDS),
    ("AWS/RDS", "CPUUtilization"): Emission(60, dims(("DBInstanceIdentifier",)), True, RDS),
    ("AWS/RDS", "DatabaseConnections"): Emission(60, dims(("DBInstanceIdentifier",)), True, RDS),
    ("AWS/ElastiCache", "EngineCPUUtilization"): Emission(60, dims(("CacheClusterId",)), True, ELASTICACHE),
    ("AWS/ElastiCache", "Evictions"): Emission(60, dims(("CacheClusterId",)), True, ELASTICACHE),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): Emission(
        60,
        dims(("QueueName",)),
        False,
        "SQS Developer Guide, 'Available CloudWatch metrics for Amazon SQS' (each minute; not for a queue idle 6 hours)",
    ),
    ("AWS/WAFV2", "BlockedRequests"): Emission(
        None, dims(("WebACL", "Rule"), ("WebACL", "Region", "Rule")), False, WAF
    ),
    ("AWS/CloudFront", "4xxErrorRate"): Emission(None, dims(("DistributionId", "Region")), False, CLOUDFRONT),
    ("AWS/CloudFront", "Requests"): Emission(None, dims(("DistributionId", "Region")), False, CLOUDFRONT),
}


# -- Sluice's metrics, from the code that emits them ----------------------------------------------
def emf_records(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            yield json.loads(line)


def reconciler_gap() -> int:
    """At most this many seconds between two reconciler lines: its schedule, its timeout and the
    scheduler's minute, read from app.py and the prod stage template."""
    from chalice.app import Rate, ScheduledEventConfig

    import app as app_module

    [schedule] = [
        s for s in app_module.app.event_sources if isinstance(s, ScheduledEventConfig) and s.name == "reconcile_writes"
    ]
    rate = schedule.schedule_expression
    assert isinstance(rate, Rate) and rate.unit == Rate.MINUTES
    stage = json.loads((ROOT / ".chalice" / "templates" / "stage-prod.json").read_text())["stages"]["prod"]
    timeout = int(stage["lambda_functions"]["reconcile_writes"]["lambda_timeout"])
    return rate.value * 60 + timeout + SCHEDULE_SLACK_SECONDS


@pytest.fixture(scope="module")
def sluice_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Emission]:
    """Run what emits Sluice's metrics and read what it wrote."""
    return emitted_by_the_code(tmp_path_factory.mktemp("emit"))


def emitted_by_the_code(folder: Path) -> dict[tuple[str, str], Emission]:
    import contextlib
    import io

    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap
    from chalicelib.errors import DatabaseUnavailable
    from chalicelib.loader.reconciler import reconcile_recent
    from tests.functional.aws_fakes import BUCKET, boto_client, build_services, command_line, make_bucket, moto_aws

    class Context:  # a Lambda context with the reconciler's whole timeout left
        def get_remaining_time_in_millis(self) -> int:
            return 840_000

    now = datetime.now(UTC)
    hour = f"writes/{now:%Y/%m/%d/%H}"
    down = folder / "down.sqlite3"
    down.mkdir()
    env = {"LOCAL_DATA_DIR": str(folder), "WRITES_BUCKET": BUCKET}
    out, out_down = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, moto_aws(patch, folder):
        patch.setenv("SLUICE_LOG", "1")
        s3 = boto_client("s3")
        make_bucket(s3)
        for name in ("by-event", "by-reconciler"):
            s3.put_object(Bucket=BUCKET, Key=f"{hour}/{name}", Body=command_line(name)[1])
        try:
            with contextlib.redirect_stdout(out):
                build_services(env)
                with Client(app_module.app) as client:
                    assert client.http.get("/health").status_code == 200
                    event = client.events.generate_s3_event(BUCKET, f"{hour}/by-event")
                    client.lambda_.invoke("load_writes", event)
                reconcile_recent(bootstrap.services(), now=now, context=Context())
                bootstrap.reset()
            with contextlib.redirect_stdout(out_down):
                build_services({**env, "DATABASE_URL": f"sqlite:///{down}"})
                with pytest.raises(DatabaseUnavailable):
                    reconcile_recent(bootstrap.services(), now=now, context=Context())
        finally:
            bootstrap.reset()
    lines: dict[str, list[dict[str, Any]]] = {"request": [], "load": [], "reconcile": []}
    for record in emf_records(out.getvalue()):
        lines[record["type"]].append(record)
    lines["reconcile-down"] = list(emf_records(out_down.getvalue()))
    assert all(lines.values()), {kind: len(found) for kind, found in lines.items()}
    assert {r["source"] for r in lines["load"]} == {"event", "reconcile"}

    def metrics_of(kind: str) -> dict[str, frozenset[frozenset[str]]]:
        found: dict[str, set[frozenset[str]]] = {}
        for record in lines[kind]:
            for directive in record["_aws"]["CloudWatchMetrics"]:
                assert directive["Namespace"] == "Sluice"
                for metric in directive["Metrics"]:
                    found.setdefault(metric["Name"], set()).update(frozenset(d) for d in directive["Dimensions"])
        return {name: frozenset(sets) for name, sets in found.items()}

    table: dict[tuple[str, str], Emission] = {}
    for kind in ("request", "load"):
        for name, sets in metrics_of(kind).items():
            table["Sluice", name] = Emission(None, sets, False, f"chalicelib/observe.py, one {kind} line each")
    up, down_run = metrics_of("reconcile"), metrics_of("reconcile-down")
    gap = reconciler_gap()
    for name in set(up) | set(down_run):
        sets = up.get(name, frozenset()) | down_run.get(name, frozenset())
        if name not in up:  # only when the run fails: an event
            table["Sluice", name] = Emission(None, sets, False, "chalicelib/loader/reconciler.py, failed runs")
        else:
            table["Sluice", name] = Emission(
                gap,
                sets,
                name in down_run,
                "chalicelib/loader/reconciler.py, every run" + ("" if name in down_run else " the database answers"),
            )
    return table


# -- the templates' alarms ------------------------------------------------------------------------
@dataclass(frozen=True)
class Watched:
    """One metric an alarm watches, with its alarm's evaluation."""

    namespace: str
    name: str
    dimensions: dict[str, Any]
    period: int
    evaluation_periods: int
    datapoints: int
    missing: str


def watched(alarm: dict[str, Any]) -> list[Watched]:
    n = int(alarm["EvaluationPeriods"])
    m = int(alarm.get("DatapointsToAlarm", n))
    missing = alarm.get("TreatMissingData", "missing")
    if "Metrics" not in alarm:
        return [
            Watched(
                alarm["Namespace"],
                alarm["MetricName"],
                {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])},
                int(alarm["Period"]),
                n,
                m,
                missing,
            )
        ]
    out = []
    for query in alarm["Metrics"]:
        if "MetricStat" in query:
            stat = query["MetricStat"]
            metric = stat["Metric"]
            out.append(
                Watched(
                    metric["Namespace"],
                    metric["MetricName"],
                    {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])},
                    int(stat["Period"]),
                    n,
                    m,
                    missing,
                )
            )
    return out


def problems(alarm: dict[str, Any], known: dict[tuple[str, str], Emission]) -> list[str]:
    """Why the alarm cannot fire, or fires on nothing; [] when it is sound."""
    found = []
    for w in watched(alarm):
        what = f"{w.namespace} {w.name}"
        emission = known.get((w.namespace, w.name))
        if emission is None:
            found.append(f"{what}: nothing emits it")
            continue
        if frozenset(w.dimensions) not in emission.dimensions:
            found.append(
                f"{what}: published under {sorted(map(sorted, emission.dimensions))}, not {sorted(w.dimensions)}"
            )
        if w.namespace == "Sluice" and w.dimensions.get("Stage") != {"Ref": "Stage"}:
            found.append(f"{what}: its Stage dimension must be the stack's Stage")
        if w.period < 60 or w.period % 60:
            found.append(f"{what}: a period of {w.period} s (whole minutes only)")
            continue
        if w.period * w.evaluation_periods > DAY:
            found.append(f"{what}: looks back more than a day")
        if not 1 <= w.datapoints <= w.evaluation_periods:
            found.append(f"{what}: {w.datapoints} of {w.evaluation_periods} datapoints")
        if emission.every is None:
            if w.missing != "notBreaching":
                found.append(f"{what}: comes with events only; a period without any must not breach ({w.missing})")
            continue
        holding = w.evaluation_periods // math.ceil(emission.every / w.period)
        if holding < w.datapoints:
            found.append(
                f"{what}: at most {emission.every} s apart, so {w.evaluation_periods} periods of {w.period} s may hold "
                f"only {holding} datapoint(s): {w.datapoints} can never breach"
            )
        if w.missing == "breaching" and (w.period < emission.every or not emission.always):
            found.append(f"{what}: a period may be empty while all is well, and missing data breaches")
    return found


def template_alarms() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, path in TEMPLATES.items():
        template = load_cfn_yaml(str(path))
        for logical, resource in template["Resources"].items():
            if resource["Type"] == "AWS::CloudWatch::Alarm":
                yield f"{name}:{logical}", resource["Properties"]


ALARMS = dict(template_alarms())


@pytest.mark.parametrize("alarm", sorted(ALARMS))
def test_each_alarm_can_fire_on_what_its_metric_says(alarm, sluice_metrics):
    assert problems(ALARMS[alarm], {**AWS_METRICS, **sluice_metrics}) == []


def test_the_reconciler_metrics_come_once_a_run_and_the_backlog_even_without_the_database(sluice_metrics):
    gap = reconciler_gap()
    assert gap == 15 * 60 + 840 + SCHEDULE_SLACK_SECONDS
    backlog = sluice_metrics["Sluice", "ReconcilerBacklog"]
    assert (backlog.every, backlog.always, backlog.dimensions) == (gap, True, dims(("Stage",)))
    poisoned = sluice_metrics["Sluice", "PoisonedObjects"]
    assert (poisoned.every, poisoned.always) == (gap, False)
    deferred = sluice_metrics["Sluice", "OldestDeferredObjectAgeSeconds"]
    assert (deferred.every, deferred.always, deferred.dimensions) == (gap, False, dims(("Stage",)))
    assert sluice_metrics["Sluice", "ReconcilerFailures"].every is None
    assert sluice_metrics["Sluice", "ObjectLagSeconds"].every is None
    # every Sluice metric carries the stage, so that two stages in one account never share one
    assert all(frozenset({"Stage"}) <= names for e in sluice_metrics.values() for names in e.dimensions)


# -- the rules themselves -----------------------------------------------------------------------
def alarm_on(namespace: str, name: str, period: int, n: int, m: int, missing: str, **dimensions: Any) -> dict[str, Any]:
    return {
        "Namespace": namespace,
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
        "Period": period,
        "EvaluationPeriods": n,
        "DatapointsToAlarm": m,
        "TreatMissingData": missing,
    }


STAGE = {"Ref": "Stage"}


def test_the_backlog_alarm_of_the_last_release_could_never_fire(sluice_metrics):
    # 3 of 3 datapoints at 300 s, for a metric that comes once a run: one period in six holds one
    before = alarm_on("Sluice", "ReconcilerBacklog", 300, 3, 3, "notBreaching", Stage=STAGE)
    [problem] = problems(before, sluice_metrics)
    assert "can never breach" in problem
    assert problems(alarm_on("Sluice", "ReconcilerBacklog", 1800, 1, 1, "breaching", Stage=STAGE), sluice_metrics) == []
    # two periods of 900 s always hold one run's line between them
    assert (
        problems(alarm_on("Sluice", "ReconcilerBacklog", 900, 2, 1, "notBreaching", Stage=STAGE), sluice_metrics) == []
    )
    assert problems(alarm_on("Sluice", "ReconcilerBacklog", 900, 2, 2, "notBreaching", Stage=STAGE), sluice_metrics)
    # a 900 s period may be empty: missing data must not breach then
    assert problems(alarm_on("Sluice", "ReconcilerBacklog", 900, 2, 1, "breaching", Stage=STAGE), sluice_metrics)


def test_an_alarm_on_a_metric_nothing_emits_is_refused(sluice_metrics):
    # a name close to one the reconciler emits, but not it
    waiting = alarm_on("Sluice", "OldestDeferredObjectAge", 1800, 1, 1, "ignore", Stage=STAGE)
    assert problems(waiting, sluice_metrics) == ["Sluice OldestDeferredObjectAge: nothing emits it"]
    assert problems(alarm_on("Sluice", "ReconcilerBacklog", 1800, 1, 1, "ignore", Stage="prod"), sluice_metrics)
    assert problems(alarm_on("Sluice", "ReconcilerBacklog", 1800, 1, 1, "ignore", Route="x"), sluice_metrics)


def test_a_metric_known_only_when_the_database_answers_never_breaches_on_a_gap(sluice_metrics):
    assert problems(alarm_on("Sluice", "PoisonedObjects", 1800, 1, 1, "breaching", Stage=STAGE), sluice_metrics)
    assert problems(alarm_on("Sluice", "PoisonedObjects", 1800, 1, 1, "ignore", Stage=STAGE), sluice_metrics) == []


def test_event_metrics_and_the_api_stage():
    api = {"ApiName": {"Ref": "ApiName"}, "Stage": {"Ref": "ApiStage"}}
    assert problems(alarm_on("AWS/ApiGateway", "5XXError", 300, 1, 1, "notBreaching", **api), AWS_METRICS) == []
    # without its Stage, every stage's API of that name in the account shares the metric
    no_stage = alarm_on("AWS/ApiGateway", "5XXError", 300, 1, 1, "notBreaching", ApiName={"Ref": "ApiName"})
    assert problems(no_stage, AWS_METRICS) == []  # published so, but see the test below
    assert problems(alarm_on("AWS/ApiGateway", "5XXError", 300, 1, 1, "breaching", **api), AWS_METRICS)
    assert problems(alarm_on("AWS/RDS", "CPUUtilization", 30, 1, 1, "breaching", DBInstanceIdentifier="m"), AWS_METRICS)
    assert problems(
        alarm_on("AWS/RDS", "CPUUtilization", 3600, 25, 1, "breaching", DBInstanceIdentifier="m"), AWS_METRICS
    )


def test_the_api_metrics_of_every_alarm_name_the_stage():
    for name, alarm in ALARMS.items():
        for w in watched(alarm):
            if w.namespace == "AWS/ApiGateway":
                assert w.dimensions == {"ApiName": {"Ref": "ApiName"}, "Stage": {"Ref": "ApiStage"}}, name


def test_what_the_alarms_watch():
    seen = {(w.namespace, w.name, tuple(sorted(w.dimensions))) for a in ALARMS.values() for w in watched(a)}
    for metric in (
        ("AWS/WAFV2", "BlockedRequests", ("Region", "Rule", "WebACL")),  # the API's regional web ACL
        ("AWS/WAFV2", "BlockedRequests", ("Rule", "WebACL")),  # the edge's (CloudFront: no Region)
        ("AWS/CloudFront", "4xxErrorRate", ("DistributionId", "Region")),
        ("AWS/Lambda", "Throttles", ("FunctionName",)),
        ("AWS/RDS", "CPUUtilization", ("DBInstanceIdentifier",)),
        ("AWS/RDS", "DatabaseConnections", ("DBInstanceIdentifier",)),
        ("AWS/ElastiCache", "EngineCPUUtilization", ("CacheClusterId",)),
        ("AWS/ElastiCache", "Evictions", ("CacheClusterId",)),
        ("Sluice", "ObjectLagSeconds", ("Stage",)),
        ("Sluice", "PoisonedObjects", ("Stage",)),
        ("Sluice", "OldestDeferredObjectAgeSeconds", ("Stage",)),
        ("Sluice", "ReconcilerBacklog", ("Stage",)),
    ):
        assert metric in seen, metric
    throttled = [w for a in ALARMS.values() for w in watched(a) if w.name == "Throttles"]
    assert [w.dimensions["FunctionName"] for w in throttled] == [{"Fn::Sub": "sluice-${Stage}"}]  # api_handler
    masters = {
        w.dimensions["DBInstanceIdentifier"]["Ref"]
        for a in ALARMS.values()
        for w in watched(a)
        if w.namespace == "AWS/RDS" and w.name != "ReplicaLag"
    }
    assert masters == {"DatabaseMaster"}


def test_the_waf_alarms_name_their_web_acls():
    data, edge = (load_cfn_yaml(str(TEMPLATES[n])) for n in ("data", "edge"))
    acl_names = {
        "data": data["Resources"]["ApiWebAcl"]["Properties"]["Name"],
        "edge": edge["Resources"]["WebAcl"]["Properties"]["Name"],
    }
    for name, alarm in ALARMS.items():
        for w in watched(alarm):
            if w.namespace == "AWS/WAFV2":
                template = name.split(":")[0]
                props = (data if template == "data" else edge)["Resources"]
                acl = props["ApiWebAcl" if template == "data" else "WebAcl"]["Properties"]
                # the WebACL dimension is the web ACL's metric name, which is its name here
                assert w.dimensions["WebACL"] == acl["VisibilityConfig"]["MetricName"] == acl_names[template]
                assert w.dimensions["Rule"] == "ALL"


def test_every_alarm_notifies_its_own_regions_topic():
    for name, alarm in ALARMS.items():
        topic = {"data": "AlarmTopic", "edge": "EdgeAlarmTopic"}[name.split(":")[0]]
        assert alarm["AlarmActions"] == [{"Ref": topic}] and alarm["OKActions"] == [{"Ref": topic}], name


def test_the_edge_topic_reaches_the_same_address():
    edge = load_cfn_yaml(str(TEMPLATES["edge"]))
    subscription = edge["Resources"]["EdgeAlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    data = load_cfn_yaml(str(TEMPLATES["data"]))
    assert data["Outputs"]["AlarmEmail"]["Value"] == {"Ref": "AlarmEmail"}  # the deploy step passes it on
