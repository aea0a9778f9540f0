"""Expected refusals of the merchant and alliance-settings services.

Codes are part of the protocol (problem details `code`), so they never change; the API maps them to
HTTP statuses in one place. Validation errors name the offending field in `extra["field"]`.
"""

from __future__ import annotations

from core.errors import DomainError, NotFound, ValidationFailed


class MerchantNotFound(NotFound):
    """No merchant with that id (code `not_found`)."""


class KeyNotFound(NotFound):
    """No key with that id for that merchant (code `not_found`)."""


class CurrencyNotFound(NotFound):
    """No currency with that code (code `not_found`)."""


class DuplicateMerchant(ValidationFailed):
    """A merchant with that id or (case-insensitive) name already exists."""


class DuplicateKey(ValidationFailed):
    """A key with that key id already exists (key ids are global: they select the merchant)."""


class DuplicateCurrency(ValidationFailed):
    """A currency with that code already exists."""


class InvalidPublicKey(ValidationFailed):
    """The public key is not a well-formed Ed25519 public key in an accepted format."""


class InvalidField(ValidationFailed):
    """A malformed merchant, key or currency field (name, limit, URL, key id, validity window)."""


class InvalidSettings(ValidationFailed):
    """Alliance settings or a conversion rate that cannot be accepted (or none exist yet)."""


class MerchantClosed(DomainError):
    """The merchant is closed; closing is final, so nothing may change it any more."""

    code = "merchant_closed"
