"""Pydantic's validation errors as the `fields` of a validation_error problem (no input echoed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError


def _location(loc: Sequence[Any]) -> str:
    parts = [str(part) for part in loc if part not in ("body",)]
    return ".".join(parts) or "body"


def fields_from_errors(errors: Sequence[Any]) -> dict[str, str]:
    return {_location(error["loc"]): str(error["msg"]) for error in errors}


def fields_of(error: ValidationError) -> dict[str, str]:
    return fields_from_errors(error.errors(include_input=False, include_url=False))
