"""Pydantic's validation errors as the `fields` of a validation_error problem (no input echoed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from exchange.api.problems import printable, problem

IMPOSSIBLE_ID = "string_pattern_mismatch"
"""The error of a string id that fails schemas.ID_PATTERN (too long, or a character no id has)."""
BODY_IDS = frozenset({"member_id", "transaction_id"})
"""Body members that name a resource: a string one that no resource can have is not_found."""


def _location(loc: Sequence[Any]) -> str:
    # A location can hold a client's own key (an unknown member); it is shown, but only as
    # UTF-8 can carry it (a lone surrogate escape in the JSON would make the problem unsendable).
    parts = [printable(str(part)) for part in loc if part not in ("body",)]
    return ".".join(parts) or "body"


def fields_from_errors(errors: Sequence[Any]) -> dict[str, str]:
    return {_location(error["loc"]): printable(str(error["msg"])) for error in errors}


def _names_impossible_id(error: Any) -> bool:
    if error.get("type") != IMPOSSIBLE_ID:
        return False
    loc = tuple(error.get("loc", ()))
    if not loc or loc[0] in ("query", "header", "cookie"):
        return False  # a query filter is a parameter, not a resource: it stays malformed
    if loc[0] == "path":
        return True  # every path parameter of the API is an id
    return loc[-1] in BODY_IDS  # a body's, or a batch operation's (located by its `op`)


def names_only_impossible_ids(errors: Sequence[Any]) -> bool:
    """Whether the only thing wrong is a string id that cannot name any resource.

    Ids are opaque strings (PROTOCOL.md); the exchange only ever issues short plain ones, so one
    that fails the pattern names nothing: `not_found`, as an unknown id that fits it would be.
    A wrong type (a number for `member_id`) is still malformed, and so is a request with anything
    else wrong besides: the body is validated before any lookup.
    """
    return bool(errors) and all(_names_impossible_id(error) for error in errors)


def operation_problem(error: ValidationError) -> dict[str, Any]:
    """The problem in place of a batch operation that failed validation."""
    errors = error.errors(include_input=False, include_url=False)
    if names_only_impossible_ids(errors):
        return problem("not_found", "no such resource")
    return problem(
        "validation_error", "this operation is malformed", fields=fields_from_errors(errors)
    )
