"""Reading your own writes end to end: `chalice local` with the Firehose transport, moto's server as
the AWS endpoint (botocore's AWS_ENDPOINT_URL), the machine's Redis as CACHE_URL, and nothing that
loads the delivered objects, on SQLite and on MariaDB. The writer reads its writes back through every GET route, paged,
filtered and with min_version; then the pending writes are lost (their Redis keys deleted) and
reads fall back to what is loaded (nothing) and min_version to 503; then the CLI loads the
delivered objects and min_version is met again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.cli import make_token
from chalicelib.readers.resp import RespClient
from tests.functional.aws_fakes import make_bucket, make_stream
from tests.localserver import ROOT, chalice_local, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

STREAM, BUCKET = "sluice-e2e-writes", "sluice-e2e-writes"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        options: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        make_bucket(boto3.client("s3", **options, **keys), BUCKET)
        make_stream(boto3.client("firehose", **options, **keys), BUCKET, STREAM)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The embedded SQLite file, or a fresh MariaDB database as DATABASE_URL (migrated, dropped after)."""
    if request.param == "sqlite":
        yield {}
        return
    import pymysql

    from chalicelib.db.database import open_master

    server = request.getfixturevalue("mariadb_server")
    name = f"sluice_e2e_{uuid.uuid4().hex[:12]}"
    admin = pymysql.connect(host=server["host"], port=server["port"], user="root", password="", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    url = f"mysql://root@{server['host']}:{server['port']}/{name}"
    master = open_master(url)
    master.migrate()
    master.discard()
    try:
        yield {"DATABASE_URL": url}
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture(scope="module")
def env(moto_endpoint: str, redis_server: str, database: dict[str, str]) -> dict[str, str]:
    return {
        **database,
        **AWS,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "WRITE_TRANSPORT": "firehose",
        "FIREHOSE_STREAM": STREAM,
        "WRITES_BUCKET": BUCKET,
        "CACHE_URL": redis_server,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("own-writes")
    with chalice_local(data, env) as (base, log_path):
        yield base, data
    assert "Traceback" not in log_path.read_text(errors="replace"), "the server logged a traceback"


class Caller:
    def __init__(self, base: str, sub: str, groups: list[str] | None = None) -> None:
        self.base = base
        self.headers = {"Authorization": make_token(sub, None, None, groups or [], 3600)}

    def send(self, method: str, path: str, payload: Any = None) -> requests.Response:
        headers = dict(self.headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        data = None if payload is None else json.dumps(payload)
        return requests.request(method, self.base + path, headers=headers, data=data, timeout=30)

    def titles(self, path: str) -> list[str]:
        answer = self.send("GET", path)
        assert answer.status_code == 200, answer.text
        return [t["title"] for t in answer.json()["todos"]]

    def walk(self, path: str, limit: int) -> list[str]:
        """Every page of a list, following next_cursor."""
        out: list[str] = []
        cursor = None
        while True:
            sep = "&" if "?" in path else "?"
            page = self.send("GET", f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")).json()
            out += [t["title"] for t in page["todos"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return out


def test_the_writer_reads_its_writes_through_every_get_route_while_nothing_loads(server, env, redis_server):
    base, data = server
    alice_sub, bob_sub = str(uuid.uuid4()), str(uuid.uuid4())
    alice, bob, admin = Caller(base, alice_sub), Caller(base, bob_sub), Caller(base, "root", ["admins"])
    redis = RespClient.from_url(redis_server)
    try:
        # GIVEN writes of every kind, accepted by Firehose (moto) and loaded by nobody
        made = {}
        for title in ("one", "two", "three"):
            answer = alice.send("POST", "/todos", {"title": title})
            assert answer.status_code == 202, answer.text
            made[title] = answer.json()
        batch = alice.send("POST", "/todos/batch", {"todos": [{"title": "four"}, {"title": "five", "state": "done"}]})
        assert batch.status_code == 202, batch.text
        last = made["three"]["version"]
        changed = alice.send("PUT", f"/todos/{made['two']['id']}?min_version={last}", {"title": "TWO", "state": "done"})
        assert changed.status_code == 202 and changed.json()["version"] > last
        deleted = alice.send("DELETE", f"/todos/{made['three']['id']}")
        profile = alice.send("PUT", "/me", {"display_name": "Alice"})
        assert deleted.status_code == profile.status_code == 202
        assert _count_todos(data, env) == 0  # nothing loaded

        # THEN every GET of alice's shows them at once
        two = alice.send("GET", f"/todos/{made['two']['id']}?min_version={changed.json()['version']}")
        assert two.status_code == 200 and two.json()["title"] == "TWO"
        assert two.headers["ETag"] == f'"{changed.json()["version"]}"'
        assert alice.send("GET", f"/todos/{made['three']['id']}").status_code == 404
        gone = deleted.json()["version"]
        assert alice.send("GET", f"/todos/{made['three']['id']}?min_version={gone}").status_code == 404
        expected = sorted(
            [("one", made["one"]["id"]), ("TWO", made["two"]["id"])]
            + [(t, a["id"]) for t, a in zip(("four", "five"), batch.json()["accepted"], strict=True)],
            key=lambda pair: pair[1],
        )
        assert alice.titles("/todos") == [t for t, _ in expected]
        for limit in (1, 2, 3):
            assert alice.walk("/todos", limit) == [t for t, _ in expected]
        assert alice.walk("/todos?state=done", 1) == [t for t, _ in expected if t in ("TWO", "five")]
        assert alice.walk("/todos?state=open", 1) == [t for t, _ in expected if t in ("one", "four")]
        assert alice.send("GET", f"/todos?min_version={gone}").status_code == 200
        me = alice.send("GET", f"/me?min_version={profile.json()['version']}")
        assert me.status_code == 200 and me.json()["display_name"] == "Alice"
        # others see only what is loaded
        assert bob.send("GET", f"/todos/{made['one']['id']}").status_code == 404
        assert bob.titles("/todos") == []
        assert admin.titles(f"/users/{alice_sub}/todos") == []

        # WHEN the pending writes are lost
        for key in redis.execute_command("KEYS", f"sluice:v1:*:{alice_sub}*") or []:
            redis.execute_command("DEL", key)
        # THEN reads are eventual (nothing loaded), and min_version waits: 503 with Retry-After
        assert alice.send("GET", f"/todos/{made['one']['id']}").status_code == 404
        waiting = alice.send("GET", f"/todos/{made['one']['id']}?min_version={made['one']['version']}")
        assert (
            waiting.status_code == 503 and waiting.headers["Retry-After"] and waiting.json()["error"] == "unavailable"
        )
        assert alice.titles("/todos") == []
        assert alice.send("GET", "/me").status_code == 404
        assert alice.send("GET", f"/me?min_version={profile.json()['version']}").status_code == 503

        # WHEN the delivered objects are loaded at last (the CLI, as a replay would)
        keys = _delivered(env)
        assert keys, "Firehose (moto) delivered nothing to S3"
        _cli(data, env, "load", *[f"s3://{BUCKET}/{k}" for k in keys])
        # THEN min_version is met from the database
        one = alice.send("GET", f"/todos/{made['one']['id']}?min_version={made['one']['version']}")
        assert one.status_code == 200 and one.json()["title"] == "one"
        assert alice.send("GET", f"/todos/{made['three']['id']}?min_version={gone}").status_code == 404
        assert alice.titles("/todos") == [t for t, _ in expected]
        assert admin.titles(f"/users/{alice_sub}/todos") == [t for t, _ in expected]
    finally:
        for key in redis.execute_command("KEYS", f"sluice:v1:*:{alice_sub}*") or []:
            redis.execute_command("DEL", key)
        redis.close()


def _count_todos(data: Path, env: dict[str, str]) -> int:
    import sqlite3

    if "DATABASE_URL" in env:
        from chalicelib.db.database import open_master

        db = open_master(env["DATABASE_URL"])
        try:
            return int(db.query("SELECT COUNT(*) FROM todos")[0][0])
        finally:
            db.discard()
    if not (data / "sluice.sqlite3").exists():
        return 0
    with sqlite3.connect(data / "sluice.sqlite3") as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM todos").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def _delivered(env: dict[str, str]) -> list[str]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="writes/")
    return [item["Key"] for item in listed.get("Contents", [])]


def _cli(data: Path, env: dict[str, str], *args: str) -> None:
    full = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # env names it on MariaDB
    full.update({**env, "LOCAL_DATA_DIR": str(data), "SLUICE_LOG": "0", "PYTHONPATH": str(ROOT)})
    done = subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
