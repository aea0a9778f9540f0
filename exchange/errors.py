"""Expected refusals of the ledger, each with the stable code of PROTOCOL.md."""

from __future__ import annotations

from core.errors import DomainError, NotFound, ValidationFailed

__all__ = [
    "HoldNotActive",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyReused",
    "InsufficientPoints",
    "LiabilityLimitExceeded",
    "MerchantSuspended",
    "NotFound",
    "ReversalExceedsOriginal",
    "ValidationFailed",
]


class InsufficientPoints(DomainError):
    code = "insufficient_points"


class LiabilityLimitExceeded(DomainError):
    code = "liability_limit_exceeded"


class HoldNotActive(DomainError):
    code = "hold_not_active"


class ReversalExceedsOriginal(DomainError):
    code = "reversal_exceeds_original"


class IdempotencyKeyInFlight(DomainError):
    code = "idempotency_key_in_flight"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"


class MerchantSuspended(DomainError):
    code = "merchant_suspended"


class AllianceNotConfigured(DomainError):
    code = "alliance_not_configured"
