"""TLS for MySQL/MariaDB connections: one `ssl.SSLContext` per process, handed to every connect.

PyMySQL builds a new context on every connect unless it is given one (loading the system CA
store each time: about 22 ms here, against 0.4 ms for the rest of a local connect). Here the
context is built on first use and cached for the life of the process, one per (mode, CA file).

Modes (URL option `ssl`, also spelled `ssl_mode`/`sslmode`):
- `disabled` (also `false`, `0`, `off`): plain TCP.
- `preferred`: TLS when the server offers it, without verifying it (PyMySQL's own default);
  a server without TLS is remembered per database and then reached in plain TCP.
- `required` (also `true`, `1`, `on`): TLS or no connection; the certificate is not verified.
- `verify_ca`: TLS, certificate checked against the CA bundle (`ssl_ca=PATH`).
- `verify_identity` (also `verify_full`): as `verify_ca`, and the host name must match.

`ssl_ca` takes a path or one of two names: `rds`, the RDS CA bundle packaged with the app
(`chalicelib/db/certs/rds-global-bundle.pem`: RDS instances such as the read replicas present
certificates signed by the RDS CAs, which no system store holds), and `system`, the runtime's own
trust store (RDS Proxy presents an ACM certificate that chains to Amazon's public roots).

Defaults when the URL names no mode: `verify_identity` when a CA bundle is configured (`ssl_ca`
in the URL, or the `ca_bundle` given by the composition root, e.g. the RDS bundle); otherwise
`disabled` for a loopback host and `preferred` for any other. An RDS endpoint without a
configured bundle gets `required` (RDS always offers TLS), and a warning, once.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass

from chalicelib.db.urls import DbUrl

log = logging.getLogger(__name__)

MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")
ALIASES = {
    "false": "disabled",
    "0": "disabled",
    "off": "disabled",
    "no": "disabled",
    "true": "required",
    "1": "required",
    "on": "required",
    "yes": "required",
    "verify_full": "verify_identity",
    "verify-full": "verify_identity",
    "verify-ca": "verify_ca",
    "verify-identity": "verify_identity",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SYSTEM_STORE = "system"
PACKAGED_BUNDLES = {
    "rds": os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "db", "certs", "rds-global-bundle.pem"
    )
}
RDS_SUFFIXES = (".rds.amazonaws.com", ".rds.amazonaws.com.cn")


@dataclass(frozen=True)
class TlsPolicy:
    mode: str  # one of MODES
    ca: str = ""  # CA bundle path (verify modes)

    @property
    def verifies(self) -> bool:
        return self.mode in ("verify_ca", "verify_identity")


def policy_for(url: DbUrl, ca_bundle: str = "") -> TlsPolicy:
    """The TLS policy a database URL asks for (see the module doc for the defaults)."""
    options = url.options
    raw = (options.get("ssl") or options.get("ssl_mode") or options.get("sslmode") or "").strip().lower()
    mode = ALIASES.get(raw, raw)
    ca = (options.get("ssl_ca") or options.get("sslrootcert") or ca_bundle or "").strip()
    if mode and mode not in MODES:
        raise ValueError(f"unknown ssl mode {raw!r} in the database URL; use one of {', '.join(MODES)}")
    if not mode:
        if ca:
            mode = "verify_identity"
        elif url.host in LOOPBACK:
            mode = "disabled"
        elif url.host.endswith(RDS_SUFFIXES):
            _warn_once(f"no CA bundle configured for {url.host}: TLS without certificate checks")
            mode = "required"
        else:
            mode = "preferred"
    if mode in ("verify_ca", "verify_identity") and not ca:
        raise ValueError(f"ssl={mode} needs a CA bundle: add ssl_ca=/path/to/bundle.pem to the database URL")
    ca = PACKAGED_BUNDLES.get(ca, ca)
    if ca and ca != SYSTEM_STORE and mode in ("verify_ca", "verify_identity") and not os.path.isfile(ca):
        raise ValueError(f"the CA bundle {ca!r} does not exist")
    return TlsPolicy(mode, ca if mode in ("verify_ca", "verify_identity") else "")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


_contexts: dict[TlsPolicy, ssl.SSLContext] = {}
_lock = threading.Lock()
builds = 0  # how many contexts this process has built (tests and benchmarks read it)


def context_for(policy: TlsPolicy) -> ssl.SSLContext | None:
    """The process's one context for this policy (built on first use); None when disabled."""
    if policy.mode == "disabled":
        return None
    context = _contexts.get(policy)
    if context is None:
        with _lock:
            context = _contexts.get(policy)
            if context is None:
                context = _build(policy)
                _contexts[policy] = context
    return context


def _build(policy: TlsPolicy) -> ssl.SSLContext:
    global builds
    builds += 1
    if policy.verifies:
        context = ssl.create_default_context(cafile=None if policy.ca == SYSTEM_STORE else policy.ca)
        context.check_hostname = policy.mode == "verify_identity"
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        # Encryption only: no CA store to load (that load is most of PyMySQL's 22 ms).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def clear() -> None:
    """Forget every cached context (tests)."""
    with _lock:
        _contexts.clear()
