"""RELIABILITY A2, broken object-level authorization: every operation that takes an id answers an
id of another merchant's exactly as it answers one that does not exist (404 not_found, the same
body), shows nothing of the other merchant, and changes nothing; the transaction list shows only
the caller's own transactions, whatever member it is filtered by.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from core.ids import new_id
from tests.api.conftest import Partner, call, make_partner
from tests.api.test_error_codes import assert_problem, enrol, funded_member, issuance, post
from tests.api.writes import nothing_written
from tests.factories import unique


@dataclass
class World:
    """Two merchants who share a member; each has a transaction, an active hold and one more."""

    mine: Partner
    theirs: Partner
    member: str
    own: dict[str, str]
    foreign: dict[str, str]
    foreign_values: list[str]
    """Everything of the other merchant's that must never appear in an answer to me."""


async def objects_of(client, partner, clock, member: str) -> dict[str, Any]:
    issued = await post(
        client, partner, clock, "/v1/issuances", issuance(member, 100) | {"reference": unique("r")}
    )
    redeemed = await post(client, partner, clock, "/v1/redemptions", issuance(member, 10))
    holds = [await post(client, partner, clock, "/v1/holds", issuance(member, 5)) for _ in range(3)]
    for response in (issued, redeemed, *holds):
        assert response.status_code == 201, response.text
    return {
        "transaction": issued.json(),
        "redemption": redeemed.json(),
        "holds": [hold.json() for hold in holds],
    }


@pytest.fixture
async def world(db, client, clock) -> World:
    mine, theirs = await make_partner(db), await make_partner(db)
    member = await enrol(client, mine, clock)
    own = await objects_of(client, mine, clock, member)
    foreign = await objects_of(client, theirs, clock, member)
    values = [
        theirs.merchant_id,
        theirs.key_id,
        foreign["transaction"]["transaction_id"],
        foreign["transaction"]["reference"],
        foreign["redemption"]["transaction_id"],
        foreign["redemption"]["reference"],
        *(hold["hold_id"] for hold in foreign["holds"]),
        *(hold["reference"] for hold in foreign["holds"] if "reference" in hold),
    ]
    return World(
        mine,
        theirs,
        member,
        own={
            "transaction": own["transaction"]["transaction_id"],
            "capture": own["holds"][0]["hold_id"],
            "void": own["holds"][1]["hold_id"],
        },
        foreign={
            "transaction": foreign["transaction"]["transaction_id"],
            "capture": foreign["holds"][0]["hold_id"],
            "void": foreign["holds"][1]["hold_id"],
        },
        foreign_values=values,
    )


# Each id-bearing operation: how to call it with an id, and what it answers for one's own id.
OPERATIONS: dict[str, tuple[str, str, str, Any, int]] = {
    # name: (id kind, method, path template, body, success status)
    "get_transaction": ("transaction", "GET", "/v1/transactions/{id}", None, 200),
    "reverse_transaction": (
        "transaction",
        "POST",
        "/v1/transactions/{id}/reversals",
        {"points": 1, "reference": "refund"},
        201,
    ),
    "capture_hold": ("capture", "POST", "/v1/holds/{id}/capture", {}, 201),
    "void_hold": ("void", "POST", "/v1/holds/{id}/void", {}, 200),
}

ID_KINDS = ("foreign", "random", "nonexistent")


def id_of(world: World, kind: str, target: str) -> str:
    if kind == "own":
        return world.own[target]
    if kind == "foreign":
        return world.foreign[target]
    if kind == "random":
        return new_id("txn" if target == "transaction" else "hld")
    return "does-not-exist-" + uuid.uuid4().hex[:8]


async def attempt(client, clock, world: World, operation: str, id_: str) -> httpx.Response:
    _, method, template, body, _ = OPERATIONS[operation]
    return await call(client, world.mine, clock, method, template.format(id=id_), json_body=body)


def assert_shows_nothing_foreign(response: httpx.Response, world: World) -> None:
    for value in world.foreign_values:
        assert value not in response.text, f"{value!r} leaked in {response.text}"


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_own_id_is_served(client, clock, world, operation):
    target, *_, status = OPERATIONS[operation]
    response = await attempt(client, clock, world, operation, id_of(world, "own", target))
    assert response.status_code == status, response.text
    assert_shows_nothing_foreign(response, world)


@pytest.mark.parametrize("kind", ID_KINDS)
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_foreign_or_unknown_id_answers_exactly_like_a_missing_one(
    db, client, clock, world, operation, kind
):
    target = OPERATIONS[operation][0]
    missing = await attempt(client, clock, world, operation, new_id("zzz"))
    reference = assert_problem(missing, 404, "not_found")
    async with nothing_written(
        db, members=[world.member], merchants=[world.mine.merchant_id, world.theirs.merchant_id]
    ):
        response = await attempt(client, clock, world, operation, id_of(world, kind, target))
    problem = assert_problem(response, 404, "not_found")
    assert problem == reference
    assert response.content == missing.content
    assert set(response.headers) == set(missing.headers)
    assert_shows_nothing_foreign(response, world)


async def test_other_merchants_objects_are_untouched_after_the_attempts(client, clock, world):
    """What the other merchant sees of its own objects after every refused attempt on them."""
    for operation in OPERATIONS:
        target = OPERATIONS[operation][0]
        await attempt(client, clock, world, operation, world.foreign[target])
    transaction = await call(
        client, world.theirs, clock, "GET", f"/v1/transactions/{world.foreign['transaction']}"
    )
    assert transaction.status_code == 200
    reversal = await call(
        client,
        world.theirs,
        clock,
        "POST",
        f"/v1/transactions/{world.foreign['transaction']}/reversals",
        json_body={"reference": "full"},
    )
    assert reversal.status_code == 201, reversal.text
    assert reversal.json()["points"] == 100  # nothing of it had been reversed by the other merchant
    for action in ("capture", "void"):
        response = await call(
            client,
            world.theirs,
            clock,
            "POST",
            f"/v1/holds/{world.foreign[action]}/{action}",
            json_body={},
        )
        assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("member_filter", ["shared", "foreign_only", "random", None])
async def test_transaction_list_shows_only_own_transactions(client, clock, world, member_filter):
    foreign_only = await enrol(client, world.theirs, clock)
    _, foreign_issue = await funded_member(client, world.theirs, clock, 5)
    await post(client, world.theirs, clock, "/v1/issuances", issuance(foreign_only, 5))
    member = {
        "shared": world.member,
        "foreign_only": foreign_only,
        "random": new_id("mbr"),
        None: None,
    }[member_filter]
    params = {"limit": "100"} | ({"member_id": member} if member else {})
    response = await call(client, world.mine, clock, "GET", "/v1/transactions", params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    assert {item["merchant_id"] for item in page["data"]} <= {world.mine.merchant_id}
    assert_shows_nothing_foreign(response, world)
    assert foreign_issue["transaction_id"] not in response.text
    own_ids = {item["transaction_id"] for item in page["data"]}
    if member_filter in ("shared", None):
        assert world.own["transaction"] in own_ids
    else:
        assert page == {"data": [], "next_cursor": None}


async def test_transaction_list_pages_never_cross_into_another_merchant(client, clock, world):
    seen: list[str] = []
    cursor = None
    while True:
        params = {"member_id": world.member, "limit": "1"} | ({"cursor": cursor} if cursor else {})
        response = await call(client, world.mine, clock, "GET", "/v1/transactions", params=params)
        assert response.status_code == 200
        page = response.json()
        assert {item["merchant_id"] for item in page["data"]} <= {world.mine.merchant_id}
        assert_shows_nothing_foreign(response, world)
        seen += [item["transaction_id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 2  # my issuance and my redemption, nothing else
