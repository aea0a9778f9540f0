"""Every log line of the test run is scanned for secret material (RELIABILITY.md A8).

A pytest plugin (tests/conftest.py loads it). It sees what the exchange logs in the test process:
records of the standard `logging` module (a handler on the root logger, at INFO and above) and
the structured request and error log (a structlog processor placed before the renderer each
time the app configures logging). Each line is scanned as it is written for

- a PEM private key (any `-----BEGIN … PRIVATE KEY-----`), and
- the secrets the tests know (`register_secret`: the console's signing key, the test users'
  password), so a regression that logs one fails the run.

A hit fails the whole session at its end, naming the test and the line (the secret masked).
Servers the tests start as subprocesses (`alliance serve`) log to their own files; those are not
scanned here. Command output meant for the operator (a demo password printed once) is not a log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest

PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
PEM_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)", re.S
)
SECRET_LENGTH_MIN = 12
"""Shorter values would match ordinary words; every secret the tests register is longer."""

_known: set[str] = set()
_hits: list[Hit] = []
_current_test = "(outside a test)"


@dataclass(frozen=True, slots=True)
class Hit:
    test: str
    source: str
    what: str
    excerpt: str


def register_secret(value: str) -> None:
    """A value that must never appear in a log line."""
    assert len(value) >= SECRET_LENGTH_MIN, "too short to scan for without false alarms"
    _known.add(value)


def secrets_in(text: str, known: set[str] | frozenset[str]) -> list[str]:
    """What secret material `text` holds: 'a PEM private key' and/or 'a registered secret'."""
    found = []
    if PEM_PRIVATE_KEY.search(text):
        found.append("a PEM private key")
    if any(secret in text for secret in known):
        found.append("a registered secret")
    return found


def _mask(text: str) -> str:
    for secret in _known:
        text = text.replace(secret, "<secret>")
    return PEM_PRIVATE_KEY_BLOCK.sub("<PEM private key>", text)[:300]


def scan(text: str, source: str) -> None:
    for what in secrets_in(text, _known):
        _hits.append(Hit(_current_test, source, what, _mask(text)))


def take_hits() -> list[Hit]:
    """The hits so far, forgotten (for the test that proves the scanner catches one)."""
    taken = list(_hits)
    _hits.clear()
    return taken


class _ScanningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            scan(self.format(record), f"logging:{record.name}")
        except Exception:  # a scanner must never break the code it watches
            self.handleError(record)


def structlog_scanner(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: scans the event as rendered values, passes it on unchanged."""
    scan(" ".join(f"{key}={value}" for key, value in event_dict.items()), "structlog")
    return event_dict


def _install_structlog_scanner() -> None:
    """Wrap the app's `configure_logging` so the scanner runs first in every configuration."""
    import structlog

    import exchange.main

    original = exchange.main.configure_logging

    def configure_logging(*, json: bool) -> None:
        original(json=json)
        processors = structlog.get_config()["processors"]
        if structlog_scanner not in processors:
            structlog.configure(processors=[structlog_scanner, *processors])

    exchange.main.configure_logging = configure_logging  # type: ignore[assignment]


def pytest_configure(config: pytest.Config) -> None:
    handler = _ScanningHandler(level=logging.INFO)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    _install_structlog_scanner()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    global _current_test
    _current_test = item.nodeid
    try:
        return (yield)
    finally:
        _current_test = "(outside a test)"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _hits:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(_hits)} log line(s) held secret material (RELIABILITY.md A8):"]
    lines += [f"  {hit.test} [{hit.source}] {hit.what}: {hit.excerpt}" for hit in _hits[:20]]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
