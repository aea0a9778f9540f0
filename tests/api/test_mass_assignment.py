"""RELIABILITY A3, mass assignment: every write schema is closed. A field a client may not set
(`merchant_id`, `balance`, `status`, `is_admin`, `fee`) is refused with a validation_error that
names it, and so is an amount that is not a positive JSON integer; nothing is written either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.conftest import Partner, make_partner
from tests.api.test_error_codes import assert_problem, funded_member, issuance, post
from tests.api.writes import no_ledger_effect_but_the_batch_record, nothing_written
from tests.factories import unique

FORBIDDEN = {
    "merchant_id": "mer_someone_else",
    "balance": 1_000_000,
    "status": "captured",
    "is_admin": True,
    "fee": 0,
}


@dataclass
class Targets:
    partner: Partner
    other: Partner
    member: str
    transaction_id: str
    hold_id: str


@pytest.fixture
async def targets(db, client, clock) -> Targets:
    partner, other = await make_partner(db), await make_partner(db)
    member, issued = await funded_member(client, partner, clock, 1_000)
    hold = await post(client, partner, clock, "/v1/holds", issuance(member, 50))
    assert hold.status_code == 201
    return Targets(partner, other, member, issued["transaction_id"], hold.json()["hold_id"])


def schemas(t: Targets) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each write schema with a body it would accept: (path, body)."""
    return {
        "member": ("/v1/members", {"external_ref": unique("card")}),
        "issuance": ("/v1/issuances", issuance(t.member, 10)),
        "redemption": ("/v1/redemptions", issuance(t.member, 10)),
        "hold": ("/v1/holds", issuance(t.member, 10)),
        "capture": (f"/v1/holds/{t.hold_id}/capture", {"points": 10}),
        "void": (f"/v1/holds/{t.hold_id}/void", {}),
        "reversal": (
            f"/v1/transactions/{t.transaction_id}/reversals",
            {"points": 10, "reference": unique("ref")},
        ),
        "batch": ("/v1/batches", {"operations": [{"op": "issue", **issuance(t.member, 10)}]}),
    }


SCHEMAS = ["member", "issuance", "redemption", "hold", "capture", "void", "reversal", "batch"]
WITH_POINTS = ["issuance", "redemption", "hold", "capture", "reversal"]


def batch_ready(name: str, body: dict[str, Any]) -> dict[str, Any]:
    if name == "batch":
        body["operations"][0]["idempotency_key"] = unique("k")
    return body


@pytest.mark.parametrize("name", SCHEMAS)
async def test_each_write_schema_accepts_its_plain_body(client, clock, targets, name):
    """The control: without the extra field the same body is accepted."""
    path, body = schemas(targets)[name]
    response = await post(client, targets.partner, clock, path, batch_ready(name, body))
    assert 200 <= response.status_code < 300, response.text
    if name == "batch":
        assert "code" not in response.json()["results"][0]


@pytest.mark.parametrize("field", FORBIDDEN)
@pytest.mark.parametrize("name", SCHEMAS)
async def test_field_a_client_may_not_set_is_refused_by_name(
    db, client, clock, targets, name, field
):
    path, body = schemas(targets)[name]
    body = batch_ready(name, {**body, field: FORBIDDEN[field]})
    async with nothing_written(
        db, members=[targets.member], merchants=[targets.partner.merchant_id]
    ):
        response = await post(client, targets.partner, clock, path, body)
    problem = assert_problem(response, 422, "validation_error")
    assert field in problem["fields"], problem


@pytest.mark.parametrize("field", FORBIDDEN)
async def test_field_a_client_may_not_set_in_a_batch_operation_is_refused_by_name(
    db, client, clock, targets, field
):
    operation = {"op": "issue", "idempotency_key": unique("k"), **issuance(targets.member, 10)}
    if field == "merchant_id":
        operation[field] = targets.other.merchant_id
    else:
        operation[field] = FORBIDDEN[field]
    async with no_ledger_effect_but_the_batch_record(db):
        response = await post(
            client, targets.partner, clock, "/v1/batches", {"operations": [operation]}
        )
    # A batch answers 200 with one result per operation; this one is a validation problem.
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        problem = assert_problem(response, 422, "validation_error")
    else:
        (problem,) = response.json()["results"]
        assert problem["code"] == "validation_error"
        assert problem["status"] == 422
    assert any(field in location for location in problem["fields"]), problem


BAD_POINTS = [
    pytest.param("10", id="string"),
    pytest.param(10.0, id="float_integral"),
    pytest.param(10.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param(-10, id="negative"),
    pytest.param(0, id="zero"),
    pytest.param(None, id="null"),
    pytest.param([10], id="list"),
    pytest.param({"value": 10}, id="object"),
    pytest.param(10**30, id="huge"),
]


@pytest.mark.parametrize("points", BAD_POINTS)
@pytest.mark.parametrize("name", WITH_POINTS)
async def test_points_must_be_a_positive_json_integer(db, client, clock, targets, name, points):
    path, body = schemas(targets)[name]
    body = {**body, "points": points}
    if points is None and name in ("capture", "reversal"):
        pytest.skip("points is optional here: null means all")
    async with nothing_written(
        db, members=[targets.member], merchants=[targets.partner.merchant_id]
    ):
        response = await post(client, targets.partner, clock, path, body)
    problem = assert_problem(response, 422, "validation_error")
    assert "points" in problem["fields"], problem
