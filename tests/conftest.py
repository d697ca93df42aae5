"""Shared fixtures for every tier.

Services: tests that need MariaDB, the MariaDB master/replica pair or Redis ask for a fixture
below. Outside CI a missing service skips the test with a reason that says how to run it; in CI
(CI=true) it fails, so nothing is silently skipped there.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("SLUICE_LOG", "0")  # the JSON access log is tested on its own

from chalicelib import localdev

# The gateway emulation of chalice local, whatever imports `app` first (a bench row marks the
# process as Lambda's for a while, and app.py installs it only outside Lambda).
localdev.install()

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
MARIADB_HOST = os.environ.get("SLUICE_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("SLUICE_TEST_MARIADB_PORT", "3306"))
REDIS_HOST = os.environ.get("SLUICE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("SLUICE_TEST_REDIS_PORT", "6379"))
PAIR_DIR = os.environ.get("SLUICE_PAIR_DIR", "/tmp/sluice-db-pair")


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int, how: str) -> None:
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}. {how}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


# -- identity -------------------------------------------------------------------------------
def token(sub: str, groups: list[str] | None = None, username: str | None = None) -> str:
    from chalicelib.cli import make_token

    return make_token(sub, username, None, groups or [], 3600)


def auth(sub: str = "alice", groups: list[str] | None = None, json_body: bool = True) -> dict[str, str]:
    headers = {"Authorization": token(sub, groups)}
    if json_body:
        headers["Content-Type"] = "application/json"
    return headers


# -- TLS certificates ---------------------------------------------------------------------------
def make_ca(directory: Path, name: str) -> tuple[Path, object, object]:
    """A self-signed CA certificate named `name`, written in PEM to `directory`/`name`.pem:
    (its path, the certificate, its private key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


# -- the app on the embedded defaults -----------------------------------------------------------
@pytest.fixture
def local_dir(tmp_path: Path) -> Path:
    path = tmp_path / "local"
    path.mkdir()
    return path


@pytest.fixture
def settings_env(local_dir: Path) -> dict[str, str]:
    """Environment for a Settings on the embedded defaults (local transport, SQLite)."""
    return {"LOCAL_DATA_DIR": str(local_dir)}


@pytest.fixture
def services(settings_env: dict[str, str]) -> Iterator[Any]:
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    built = bootstrap.build(Settings.from_env(settings_env))
    bootstrap.use(built)
    yield built
    bootstrap.reset()


@pytest.fixture
def client(services: Any) -> Iterator[Any]:
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app) as test_client:
        yield test_client


def body(payload: Any) -> str:
    return json.dumps(payload)


# -- real services --------------------------------------------------------------------------------
@pytest.fixture
def lambda_timeouts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """chalice's test client hands every function a Lambda context with 3 s to run
    (chalice.local.LambdaContext's default); with this fixture each function gets the timeout the
    prod stage gives it (.chalice/templates/stage-prod.json), as in Lambda. Function name ->
    seconds."""
    import chalice.test
    from chalice.local import LambdaContext

    stage = json.loads((ROOT / ".chalice" / "templates" / "stage-prod.json").read_text())["stages"]["prod"]
    timeouts = {name: int(entry["lambda_timeout"]) for name, entry in stage["lambda_functions"].items()}

    def context(function_name: str, memory_size: int, *args: Any, **kwargs: Any) -> LambdaContext:
        seconds = timeouts.get(function_name, int(stage["lambda_timeout"]))
        return LambdaContext(function_name, memory_size, max_runtime_ms=seconds * 1000)

    monkeypatch.setattr(chalice.test, "LambdaContext", context)
    return timeouts


@pytest.fixture(scope="session")
def mariadb_server() -> dict[str, Any]:
    need_service(
        "MariaDB",
        MARIADB_HOST,
        MARIADB_PORT,
        "Start it (root, empty password) or set SLUICE_TEST_MARIADB_HOST/PORT; see README 'Tests'.",
    )
    return {"host": MARIADB_HOST, "port": MARIADB_PORT, "user": "root", "password": ""}


@pytest.fixture
def mysql_url(mariadb_server: dict[str, Any]) -> Iterator[str]:
    """A fresh, empty database on the machine's MariaDB, dropped afterwards."""
    import pymysql

    name = f"sluice_t_{uuid.uuid4().hex[:12]}"
    admin = pymysql.connect(
        host=mariadb_server["host"], port=mariadb_server["port"], user="root", password="", autocommit=True
    )
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield f"mysql://root@{mariadb_server['host']}:{mariadb_server['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture
def mysql_db(mysql_url: str) -> Iterator[Any]:
    """The master `Database` on a fresh MariaDB database, migrated; discarded afterwards."""
    from chalicelib.db.database import open_master

    db = open_master(mysql_url)
    db.migrate()
    yield db
    db.discard()


def read_pair_env(directory: str) -> dict[str, str]:
    """The variables in the pair directory's `env` file (scripts/db-pair writes it); {} without one."""
    env: dict[str, str] = {}
    path = Path(directory) / "env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env[key.strip()] = value.strip().strip("'\"")
    return env


PAIR_NOTES: list[str] = []  # what the run did with the pair, printed at its end


@pytest.fixture(scope="session")
def db_pair() -> Iterator[dict[str, str]]:
    """The throwaway MariaDB master/replica pair (scripts/db-pair), started when not up. A pair
    this run started is stopped when the run ends (SLUICE_KEEP_PAIR=1 keeps it running, for the
    next runs, and says how to stop it); a pair that was up already is left as it was."""
    script = ROOT / "scripts" / "db-pair"
    status = subprocess.run([str(script), "status", PAIR_DIR], capture_output=True, text=True)
    started = status.returncode != 0
    if started:
        start = subprocess.run([str(script), "start", PAIR_DIR], capture_output=True, text=True)
        if start.returncode != 0:
            message = f"could not start the MariaDB pair with scripts/db-pair: {start.stderr.strip()[-500:]}"
            if IN_CI:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
    env = read_pair_env(PAIR_DIR)
    env["script"] = str(script)
    env["dir"] = PAIR_DIR
    yield env
    if started:
        PAIR_NOTES.append(_stop_pair(str(script), env))


def _stop_pair(script: str, env: dict[str, str]) -> str:
    ports = f"ports {env.get('SLUICE_MASTER_PORT')}/{env.get('SLUICE_REPLICA_PORT')}"
    how = f"stop it with: scripts/db-pair stop {PAIR_DIR}"
    if os.environ.get("SLUICE_KEEP_PAIR") == "1":
        return f"db-pair: the MariaDB pair this run started is still running ({ports}); {how}"
    stopped = subprocess.run([script, "stop", PAIR_DIR], capture_output=True, text=True)
    if stopped.returncode != 0:
        return f"db-pair: could not stop the MariaDB pair this run started ({ports}); {how}"
    return f"db-pair: stopped the MariaDB pair this run started ({ports}; SLUICE_KEEP_PAIR=1 keeps it running)"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for note in PAIR_NOTES:
        terminalreporter.write_line(note)


@pytest.fixture(scope="session")
def redis_server() -> str:
    need_service(
        "Redis",
        REDIS_HOST,
        REDIS_PORT,
        "Start redis-server or set SLUICE_TEST_REDIS_HOST/PORT; see README 'Tests'.",
    )
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def redis(redis_server: str) -> Iterator[Any]:
    """A RESP client of the machine's Redis (tests use keys of their own; nothing is flushed)."""
    from chalicelib.readers.resp import RespClient

    client = RespClient.from_url(redis_server)
    yield client
    client.close()


@pytest.fixture
def prefix(redis: Any) -> Iterator[str]:
    """A key prefix of the test's own in that Redis, for the cache's and the pending writes' keys
    (in place of `sluice:v1`); its keys are removed afterwards."""
    value = f"sluice-test-{uuid.uuid4().hex[:12]}:v1"
    yield value
    for key in redis.execute_command("KEYS", value + ":*") or []:
        redis.execute_command("DEL", key)
