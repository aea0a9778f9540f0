"""RELIABILITY S3, the meta-test: with signature verification switched off, the refusal matrix of
test_signature_refusals.py must fail. It shows that no refusal there passes by accident (a
request malformed in some other way, a route that refuses for another reason): each passes only
because the exchange verifies signatures.

The matrix runs in a subprocess, on a database of its own, with the plugin
tests/api/disable_verification.py, which leaves the key lookup, the merchant status and the nonce
in place but accepts any signature.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.api.test_signature_refusals import CASE_CODES, DECIDED_WITHOUT_THE_SIGNATURE
from tests.conftest import PROJECT_ROOT

REFUSALS = "tests/api/test_signature_refusals.py"
MATRIX = "test_bent_signature_is_refused_with_its_code_and_writes_nothing"
RUN_TIMEOUT_S = 300


def run_refusals_without_verification() -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        REFUSALS,
        "-p",
        "tests.api.disable_verification",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rf",
        "--no-header",
    ]
    return subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=dict(os.environ),  # the same TEST_DATABASE_URL; the session makes its own database
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def summary_count(output: str, outcome: str) -> int:
    found = re.findall(rf"(\d+) {outcome}", output.strip().splitlines()[-1])
    return int(found[0]) if found else 0


def failed_cases(output: str) -> set[str]:
    return set(re.findall(rf"^FAILED {re.escape(REFUSALS)}::{MATRIX}\[(\w+)\]", output, re.M))


def test_refusal_matrix_fails_when_signatures_are_not_verified():
    result = run_refusals_without_verification()
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"expected exit 1 (tests failed):\n{output[-5000:]}"
    failed = summary_count(output, "failed")
    assert failed >= 25, output[-5000:]

    # Precisely: every case refused for its signature fails; only those the gateway decides
    # without it (an unknown, revoked or out-of-window key, a nonce of a bad length) still pass.
    signature_cases = set(CASE_CODES) - DECIDED_WITHOUT_THE_SIGNATURE
    assert len(signature_cases) >= 30
    assert failed_cases(output) == signature_cases, output[-5000:]
