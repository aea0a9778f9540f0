"""The error every layer raises for an expected refusal: a stable code plus a human detail.

HTTP status codes are not decided here; the API maps codes to statuses in one place.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """An expected refusal. Raising it inside a unit of work rolls the whole unit back."""

    code: str = "domain_error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    code = "not_found"


class ValidationFailed(DomainError):
    code = "validation_error"


class InvariantViolation(Exception):
    """A bug: the books would be wrong. Never caught to recover."""
