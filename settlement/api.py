"""The statement endpoints of PROTOCOL.md v1: a merchant reads its own settlement statements."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from core.errors import NotFound, ValidationFailed
from core.limits import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from exchange.api.routes import CURSOR_PATTERN, PROBLEM_RESPONSES, CurrentMerchant, ResourceId
from exchange.api.schemas import Statement, StatementPage

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)

PERIOD = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _is_date(text: str) -> bool:
    if not PERIOD.match(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@router.get("/statements", response_model=StatementPage, summary="Your settlement statements")
async def statements(
    merchant: CurrentMerchant,
    period: Annotated[str | None, Query(description="YYYY-MM-DD")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = PAGE_SIZE_DEFAULT,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> dict[str, Any]:
    if period is not None and not _is_date(period):
        raise ValidationFailed("period is a date, YYYY-MM-DD", fields={"period": "invalid"})
    # No period has been settled yet: settlement runs arrive with the settlement package.
    return {"data": [], "next_cursor": None}


@router.get("/statements/{statement_id}", response_model=Statement, summary="One statement")
async def statement(statement_id: ResourceId, merchant: CurrentMerchant) -> dict[str, Any]:
    raise NotFound("no such statement")
