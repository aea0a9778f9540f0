"""The SDK's public surface, pinned: a name that appears or disappears is a decision, not an
accident. And `import sdk.signing`, which the exchange does, loads no HTTP client."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import sdk
from tests.conftest import PROJECT_ROOT

EXPORTED = {
    "ERROR_CLASSES",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AllianceClient",
    "AllianceError",
    "AllianceNotConfiguredError",
    "AsyncAllianceClient",
    "AuthenticationError",
    "Balance",
    "BatchOperation",
    "BatchResult",
    "ConfigurationError",
    "ConflictError",
    "ExchangeKey",
    "Hold",
    "HoldNotActiveError",
    "IdempotencyKeyInFlightError",
    "IdempotencyKeyReusedError",
    "InsufficientPointsError",
    "InternalServerError",
    "IssueOperation",
    "KeyRevokedError",
    "LiabilityLimitExceededError",
    "Member",
    "MerchantSuspendedError",
    "MethodNotAllowedError",
    "NextExpiry",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RedeemOperation",
    "ReplayedRequestError",
    "RequestSigner",
    "ResponseVerificationError",
    "RetryPolicy",
    "ReversalExceedsOriginalError",
    "ReverseOperation",
    "ServerError",
    "ServiceUnavailableError",
    "SignatureExpiredError",
    "SignatureInvalidError",
    "SignatureMissingError",
    "Statement",
    "StatementLine",
    "StatementPeriod",
    "Transaction",
    "UnexpectedResponseError",
    "UnknownKeyError",
    "UnknownWebhookKeyError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "WebhookEvent",
    "WebhookVerificationError",
    "__version__",
    "load_private_key",
    "new_idempotency_key",
    "verify_webhook",
}

ENDPOINT_METHODS = {
    # PROTOCOL.md's endpoints, one method each, the same on both clients.
    "enrol_member",
    "get_balance",
    "issue",
    "redeem",
    "hold",
    "capture",
    "void",
    "reverse",
    "get_transaction",
    "list_transactions",
    "batch",
    "list_statements",
    "get_statement",
    "get_exchange_keys",
}
HELPERS = {"iter_transactions", "iter_statements", "batch_all", "verify_webhook", "from_env"}


def test_the_exported_names_are_pinned():
    assert set(sdk.__all__) == EXPORTED
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None


def test_both_clients_have_one_method_per_endpoint_and_the_same_helpers():
    for client in (sdk.AllianceClient, sdk.AsyncAllianceClient):
        public = {name for name in vars(client) if not name.startswith("_")}
        assert ENDPOINT_METHODS | HELPERS <= public
        assert public - ENDPOINT_METHODS - HELPERS == {"base_url", "key_id", "close"}


def test_importing_the_canonicaliser_loads_no_http_client():
    probe = (
        "import sys, sdk.signing; "
        "loaded = sorted(m for m in sys.modules if m.startswith(('httpx', 'sdk.')) ); "
        "print(loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True
    )
    assert result.stdout.strip() == "['sdk._constants', 'sdk.signing']"


def test_the_distribution_version_is_the_packages():
    project = tomllib.loads((PROJECT_ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    assert project["version"] == sdk.__version__
    assert project["name"] == "alliance-sdk"
    assert sorted(project["dependencies"]) == ["cryptography>=42", "httpx2>=2.16"]
