"""Verified database TLS with a CA bundle packaged with the app (`ssl_ca=rds`), and the runtime's
own store for RDS Proxy (`ssl_ca=system`). The handshakes use a CA made here, served by a local
TLS socket (no RDS server here); the committed RDS bundle itself is checked as the deploy step
checks it, and in the package Chalice builds."""

from __future__ import annotations

import datetime
import hashlib
import io
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.db import tls
from chalicelib.db.urls import parse_db_url
from deploy import tls as deploy_tls
from tests.conftest import make_ca

ROOT = Path(__file__).resolve().parents[2]


def make_server_cert(directory: Path, ca_cert: object, ca_key: object, host: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)  # type: ignore[attr-defined]
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[attr-defined]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def bundle_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A TLS server whose certificate for `localhost` is signed by a CA made here."""
    ca_path, ca_cert, ca_key = make_ca(tmp_path, "stand-in-rds-ca")
    cert, key = make_server_cert(tmp_path, ca_cert, ca_key, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    tls.clear()
    yield ca_path, port
    stop.set()
    thread.join(timeout=2)
    listener.close()
    tls.clear()


def handshake(context: ssl.SSLContext, host: str, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host):
            pass


def test_the_packaged_bundle_verifies_the_server_and_its_name(bundle_server, monkeypatch):
    ca_path, port = bundle_server
    monkeypatch.setitem(tls.PACKAGED_BUNDLES, "rds", str(ca_path))
    policy = tls.policy_for(parse_db_url(f"mysql://localhost:{port}/sluice?ssl=verify_identity&ssl_ca=rds"))
    assert policy == tls.TlsPolicy("verify_identity", str(ca_path))
    context = tls.context_for(policy)
    assert context is not None
    handshake(context, "localhost", port)
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        handshake(context, "replica.example", port)  # another name: refused


def test_a_server_signed_by_another_ca_is_refused(bundle_server, tmp_path, monkeypatch):
    _, port = bundle_server
    other, _, _ = make_ca(tmp_path, "another-ca")
    monkeypatch.setitem(tls.PACKAGED_BUNDLES, "rds", str(other))
    context = tls.context_for(
        tls.policy_for(parse_db_url(f"mysql://localhost:{port}/sluice?ssl=verify_identity&ssl_ca=rds"))
    )
    assert context is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, "localhost", port)


def test_the_system_store_is_used_for_the_proxy_and_the_bundle_name_points_into_the_package():
    tls.clear()
    policy = tls.policy_for(
        parse_db_url("mysql://p.proxy-x.eu-west-1.rds.amazonaws.com/sluice?ssl=verify_identity&ssl_ca=system")
    )
    assert policy == tls.TlsPolicy("verify_identity", "system")
    context = tls.context_for(policy)
    assert context is not None and context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    packaged = Path(tls.PACKAGED_BUNDLES["rds"])
    assert packaged == ROOT / "chalicelib" / "db" / "certs" / "rds-global-bundle.pem"
    assert packaged.relative_to(ROOT) == deploy_tls.BUNDLE_NAMES["rds"]  # the file infra checks for
    tls.clear()


REPLICAS = {
    "REPLICA_URLS": "mysql://r1:3306/s?ssl=verify_identity&ssl_ca=rds,mysql://r2:3306/s?ssl=verify_identity&ssl_ca=rds"
}


def test_infra_stops_when_the_urls_name_a_bundle_the_project_lacks_or_cannot_read(tmp_path):
    with pytest.raises(deploy_tls.BundleMissing, match="rds-global-bundle.pem, which is missing"):
        deploy_tls.check_bundles(tmp_path, [REPLICAS])
    bundle = tmp_path / deploy_tls.BUNDLE_NAMES["rds"]
    bundle.parent.mkdir(parents=True)
    for broken in ("-----BEGIN CERTIFICATE-----\n", "stand-in\n", ""):
        bundle.write_text(broken)
        with pytest.raises(deploy_tls.BundleMissing, match="does not parse|not certificates"):
            deploy_tls.check_bundles(tmp_path, [REPLICAS])
    # URLs that name no bundle need none (the proxy is verified against the runtime's store).
    deploy_tls.check_bundles(tmp_path, [{"DATABASE_URL": "mysql://p:3306/s?ssl=verify_identity&ssl_ca=system"}])


def test_a_bundle_of_expired_or_non_ca_certificates_is_refused(tmp_path):
    bundle = tmp_path / deploy_tls.BUNDLE_NAMES["rds"]
    bundle.parent.mkdir(parents=True)
    ca_path, ca_cert, ca_key = make_ca(tmp_path, "stand-in-rds-ca")
    server, _ = make_server_cert(tmp_path, ca_cert, ca_key, "localhost")
    bundle.write_bytes(ca_path.read_bytes())
    assert deploy_tls.check_bundles(tmp_path, [REPLICAS]) == []
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365 * 200)
    with pytest.raises(deploy_tls.BundleMissing, match="every certificate .* has expired"):
        deploy_tls.check_bundles(tmp_path, [REPLICAS], now=later)
    bundle.write_bytes(ca_path.read_bytes() + server.read_bytes())
    with pytest.raises(deploy_tls.BundleMissing, match="not a CA"):
        deploy_tls.check_bundles(tmp_path, [REPLICAS])


# The extraction recorded in chalicelib/db/certs/README.md.
EXTRACTED_ON = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)


def test_the_committed_bundle_holds_the_rds_roots_valid_when_extracted():
    from cryptography import x509

    path = ROOT / deploy_tls.BUNDLE_NAMES["rds"]
    certificates = x509.load_pem_x509_certificates(path.read_bytes())
    assert len(certificates) == 87
    assert deploy_tls.check_bundles(ROOT, [REPLICAS], now=EXTRACTED_ON) == []  # none expired then
    names = {c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in certificates}
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
        for kind in ("RSA2048 G1", "RSA4096 G1", "ECC384 G1"):
            assert f"Amazon RDS {region} Root CA {kind}" in names
    assert all(c.issuer == c.subject for c in certificates)  # roots only
    readme = (path.parent / "README.md").read_text()
    assert hashlib.sha256(path.read_bytes()).hexdigest() in readme


def test_the_lambda_package_chalice_builds_carries_the_bundle(tmp_path):
    import zipfile

    from chalice.deploy.packager import AppOnlyDeploymentPackager
    from chalice.utils import UI, OSUtils

    # GIVEN the project's app files (what `chalice deploy` packages besides the dependencies)
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(ROOT / "app.py", project / "app.py")
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    # WHEN Chalice's packager builds the function's package (its app files: the same
    # _add_app_files every packager of chalice uses)
    packager = AppOnlyDeploymentPackager(OSUtils(), None, UI(out=io.StringIO()))  # type: ignore[arg-type]
    package = packager.create_deployment_package(str(project), "python3.12")
    # THEN the bundle is in it, byte for byte, where chalicelib/db/tls.py looks for it
    with zipfile.ZipFile(package) as zipped:
        packed = zipped.read("chalicelib/db/certs/rds-global-bundle.pem")
    assert packed == (ROOT / deploy_tls.BUNDLE_NAMES["rds"]).read_bytes()
    assert Path(tls.PACKAGED_BUNDLES["rds"]).relative_to(ROOT).as_posix() == "chalicelib/db/certs/rds-global-bundle.pem"
