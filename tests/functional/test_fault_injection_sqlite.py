"""Fault injection on the embedded tier: the real FirehoseWriter on a Firehose that refuses and
throttles, objects delivered to a moto bucket (GZIP or not, sometimes twice, sometimes with foreign
lines), S3 reads that fail now and then, S3 events dropped or sent twice, a handler that fails
retried a bounded number of times, then the reconciler; two API containers whose clocks agree,
so one todo also gets equal versions (op_id decides). Loaded into SQLite.

PROPERTY: after the reconciler has run, the rows equal a last-writer-wins model (greatest
(version, op_id) per key, tombstones included) of every write answered 202 and of every write
answered 503 whose record Firehose took after all (its answer lost); a batch answered 503 is on
the stream wholly or not at all, never in part; no other write appears; every delivered object is in the
ledger once; every foreign line is quarantined. The MariaDB master/replica version, with the
database stopped and killed during loads, is tests/integration/test_fault_injection.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from random import Random

import pytest

from tests.conftest import auth
from tests.functional.aws_fakes import BUCKET, STREAM, boto_client, make_bucket, moto_aws
from tests.integration.faults import Driver, FirehoseFaults, Run, Workload, build_run, master_rows, report

SEED = 20240501
USERS = ("fi-alice", "fi-bob", "fi-carol-\u00fc")
BASELINE = FirehoseFaults(reject_share=0.1, throttle_share=0.03, fatal_share=0.005, lost_answer_share=0.01)
BROWNOUT = FirehoseFaults(reject_share=0.5, throttle_share=0.12, fatal_share=0.02, lost_answer_share=0.08)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, local_dir: Path) -> Iterator[Run]:
    from chalicelib import bootstrap

    with moto_aws(monkeypatch, tmp_path):
        s3 = boto_client("s3")
        make_bucket(s3)
        env = {
            "LOCAL_DATA_DIR": str(local_dir),
            "WRITE_TRANSPORT": "firehose",
            "FIREHOSE_STREAM": STREAM,
            "WRITES_BUCKET": BUCKET,
        }
        try:
            yield build_run(env, s3, BUCKET, STREAM, SEED, BASELINE)
        finally:
            bootstrap.reset()


def test_accepted_writes_survive_transport_s3_and_event_faults(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="chalicelib")  # thousands of expected warnings
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app) as client:
        driver = Driver(client, Workload(Random(SEED + 4), USERS), run.model, auth, run.fake, run.pick_container)

        # GIVEN a Firehose that refuses a share of records and throttles some calls
        driver.run(600, read_share=0.08)
        run.events.deliver(run.fake.deliveries)

        # AND a brownout: most records refused, calls throttled, failing or losing their answer
        # (503s, some of which land after all)
        run.fake.faults = BROWNOUT
        brownout = driver.run(400, read_share=0.05)
        run.fake.faults = BASELINE
        run.events.deliver(run.fake.deliveries)

        # AND a scheduled reconciler run cut short by its bound
        run.reconcile(max_objects=3)

        driver.run(300, read_share=0.08)

    # WHEN the buffers are delivered and the reconciler runs until nothing is missing
    run.settle()

    # THEN the rows are the last-writer-wins model of the 202s, and nothing else
    counts, problems = run.check(master_rows(run.services.master))
    message = report(counts, problems, tmp_path, "fault-injection-sqlite.txt")
    assert not problems, message
    assert counts["lost"] == 0, message
    # (and the faults really happened)
    assert brownout["write 503"] > 0 and counts["rejected_by_api"] > 0, message
    assert counts["batches_503_absent"] > 0 and counts["batches_503_present"] > 0, message
    assert counts["landed_after_503"] > 0 and counts["half_written"] == 0, message
    assert counts["accepted"] >= 1000, message
    assert counts["events_dropped"] > 0 and counts["events_duplicated"] > 0, message
    assert counts["objects_delivered_twice"] > 0 and counts["s3_get_failures"] > 0, message
    assert counts["quarantined"] > 0 and counts["tombstones"] > 0 and counts["stale"] > 0, message
    assert counts["version_ties"] > 0, message
