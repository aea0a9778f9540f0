"""The log scan of the test run (tests/log_scan.py, RELIABILITY.md A8) catches what it must."""

from __future__ import annotations

import logging

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.main import create_app
from tests import log_scan


def pem_private_key() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def test_pem_keys_and_registered_secrets_are_found_and_nothing_else() -> None:
    known = frozenset({"correct horse battery staple"})
    assert log_scan.secrets_in(f"loaded {pem_private_key()}", known) == ["a PEM private key"]
    assert log_scan.secrets_in("sign-in correct horse battery staple", known) == [
        "a registered secret"
    ]
    assert log_scan.secrets_in("-----BEGIN PUBLIC KEY----- and a password field", known) == []


def test_a_secret_in_a_log_record_or_the_apps_structured_log_is_caught() -> None:
    """Through the real pipelines: the root logger, and structlog as the app configures it."""
    create_app()  # configures the structured log, as every app the tests build does
    secret = "an-unlikely-secret-value-4711"
    log_scan.register_secret(secret)
    try:
        assert log_scan.take_hits() == [], "the run had no hits before this test"
        logging.getLogger("exchange.test").warning("leaked %s", secret)
        structlog.get_logger("exchange.http").info("request", header=pem_private_key())
        hits = log_scan.take_hits()
    finally:
        log_scan._known.discard(secret)
    assert [(hit.source, hit.what) for hit in hits] == [
        ("logging:exchange.test", "a registered secret"),
        ("structlog", "a PEM private key"),
    ]
    assert all(secret not in hit.excerpt for hit in hits), "a report never repeats the secret"
    assert all("PRIVATE KEY" not in hit.excerpt for hit in hits), "nor the key, header or body"
    assert "header=<PEM private key>" in hits[1].excerpt
