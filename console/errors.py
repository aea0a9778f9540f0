"""The console's expected refusals. Like every DomainError, raising one rolls its unit back."""

from __future__ import annotations

from core.errors import DomainError, NotFound, ValidationFailed


class SignInFailed(DomainError):
    """Wrong username, password or code, or a locked or disabled account: one message for all,
    so that a caller cannot tell which usernames exist."""

    code = "sign_in_failed"


class SignInThrottled(DomainError):
    """Too many failed sign-ins from the client's address: refused before any password is
    checked, until `retry_after_s` has passed."""

    code = "sign_in_throttled"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Forbidden(DomainError):
    """The signed-in user's role does not allow this."""

    code = "forbidden"


class InvalidInput(ValidationFailed):
    """A console form field that cannot be accepted."""


class UserNotFound(NotFound):
    pass


class AdjustmentNotFound(NotFound):
    pass


class FourEyesViolation(DomainError):
    """An adjustment must be approved by a different operator than the one who proposed it."""

    code = "four_eyes"


class AdjustmentDecided(DomainError):
    """The adjustment was already approved or rejected."""

    code = "adjustment_decided"
