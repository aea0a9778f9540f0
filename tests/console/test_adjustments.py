"""Manual adjustments: proposed by one operator, approved by another, posted by the ledger."""

from __future__ import annotations

import asyncpg
import pytest

from console import adjustments
from console.errors import AdjustmentDecided, Forbidden, FourEyesViolation, InvalidInput
from console.users import Role
from core.clock import FixedClock
from core.errors import DomainError
from exchange.service import Ledger
from tests.console.conftest import make_user, sign_in, token_for
from tests.factories import issue, make_member, make_merchant, redeem


@pytest.fixture
async def two_operators(db):
    return (await make_user(db, Role.OPERATOR))[0], (await make_user(db, Role.OPERATOR))[0]


async def _credit(db, ledger, proposer, clock, *, points=150, limit=10**12):
    merchant_id = await make_merchant(db, liability_limit=limit)
    member_id = await make_member(ledger)
    proposal = await adjustments.propose_credit(
        db,
        merchant_id=merchant_id,
        member_id=member_id,
        points=points,
        reason="goodwill: late delivery",
        expires_at=None,
        proposer=proposer,
        now=clock.now(),
    )
    return proposal, merchant_id, member_id


async def test_a_credit_is_posted_as_an_issuance_once_a_second_operator_approves(
    db, ledger: Ledger, clock: FixedClock, two_operators
):
    alice, bob = two_operators
    proposal, merchant_id, member_id = await _credit(db, ledger, alice, clock)
    assert proposal.status == "pending"
    assert (await ledger.balance(member_id=member_id))["available"] == 0

    posted = await adjustments.approve(
        db, clock, adjustment_id=proposal.adjustment_id, approver=bob
    )
    assert posted.status == "posted"
    assert posted.decided_by == bob.user_id
    assert (await ledger.balance(member_id=member_id))["available"] == 150
    txn = await ledger.transaction(
        merchant_id=merchant_id, transaction_id=posted.posted_transaction_id
    )
    assert txn["kind"] == "issuance"
    assert txn["points"] == 150
    assert txn["reference"].startswith(f"adjustment {proposal.adjustment_id}:")
    async with db.connection() as conn:
        actions = await conn.fetch(
            "SELECT action, actor FROM audit_log WHERE target = $1 ORDER BY seq",
            proposal.adjustment_id,
        )
    assert [(r["action"], r["actor"]) for r in actions] == [
        ("adjustment.propose", alice.username),
        ("adjustment.approve", bob.username),
    ]


async def test_the_proposer_cannot_approve_their_own_adjustment(
    db, ledger: Ledger, clock: FixedClock, two_operators
):
    alice, _ = two_operators
    proposal, _, member_id = await _credit(db, ledger, alice, clock)
    with pytest.raises(FourEyesViolation):
        await adjustments.approve(db, clock, adjustment_id=proposal.adjustment_id, approver=alice)
    with pytest.raises(FourEyesViolation):
        await adjustments.reject(
            db, adjustment_id=proposal.adjustment_id, decider=alice, now=clock.now()
        )
    assert (await ledger.balance(member_id=member_id))["available"] == 0


async def test_the_database_enforces_four_eyes_too(db, ledger, clock, two_operators):
    alice, _ = two_operators
    proposal, _, _ = await _credit(db, ledger, alice, clock)
    async with db.connection() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                """UPDATE adjustments SET status = 'rejected', decided_by = proposed_by,
                          decided_at = now() WHERE adjustment_id = $1""",
                proposal.adjustment_id,
            )


async def test_an_adjustment_is_decided_once(db, ledger, clock, two_operators):
    alice, bob = two_operators
    carol = (await make_user(db, Role.ADMIN))[0]
    proposal, _, member_id = await _credit(db, ledger, alice, clock)
    await adjustments.approve(db, clock, adjustment_id=proposal.adjustment_id, approver=bob)
    with pytest.raises(AdjustmentDecided):
        await adjustments.approve(db, clock, adjustment_id=proposal.adjustment_id, approver=carol)
    assert (await ledger.balance(member_id=member_id))["available"] == 150


async def test_a_viewer_can_neither_propose_nor_approve(db, ledger, clock, two_operators):
    alice, _ = two_operators
    viewer = (await make_user(db, Role.VIEWER))[0]
    with pytest.raises(Forbidden):
        await _credit(db, ledger, viewer, clock)
    proposal, _, _ = await _credit(db, ledger, alice, clock)
    with pytest.raises(Forbidden):
        await adjustments.approve(db, clock, adjustment_id=proposal.adjustment_id, approver=viewer)


async def test_a_correction_reverses_part_of_a_redemption_through_the_ledger(
    db, ledger: Ledger, clock: FixedClock, two_operators
):
    alice, bob = two_operators
    issuer, acceptor = await make_merchant(db), await make_merchant(db)
    member_id = await make_member(ledger)
    await issue(ledger, issuer, member_id, 500)
    redemption = await redeem(ledger, acceptor, member_id, 300)
    proposal = await adjustments.propose_reversal(
        db,
        transaction_id=str(redemption["transaction_id"]),
        points=100,
        reason="charged twice at the till",
        proposer=alice,
        now=clock.now(),
    )
    assert proposal.merchant_id == acceptor
    assert proposal.member_id == member_id
    posted = await adjustments.approve(
        db, clock, adjustment_id=proposal.adjustment_id, approver=bob
    )
    reversal = await ledger.transaction(
        merchant_id=acceptor, transaction_id=posted.posted_transaction_id
    )
    assert reversal["kind"] == "reversal"
    assert reversal["reverses"] == redemption["transaction_id"]
    assert (await ledger.balance(member_id=member_id))["available"] == 300
    async with db.connection() as conn:
        cancelled = await conn.fetchval(
            "SELECT sum(points) FROM obligations WHERE member_id = $1", member_id
        )
    assert cancelled == 200  # 300 owed by the issuer, 100 of it cancelled


async def test_a_ledger_refusal_leaves_the_adjustment_pending_and_is_audited(
    db, ledger: Ledger, clock: FixedClock, two_operators
):
    alice, bob = two_operators
    proposal, _, member_id = await _credit(db, ledger, alice, clock, points=5_000, limit=10)
    with pytest.raises(DomainError) as refusal:
        await adjustments.approve(db, clock, adjustment_id=proposal.adjustment_id, approver=bob)
    assert refusal.value.code == "liability_limit_exceeded"
    async with db.connection() as conn:
        status = await conn.fetchval(
            "SELECT status FROM adjustments WHERE adjustment_id = $1", proposal.adjustment_id
        )
        last = await conn.fetchrow(
            "SELECT action, details FROM audit_log WHERE target = $1 ORDER BY seq DESC LIMIT 1",
            proposal.adjustment_id,
        )
    assert status == "pending"
    assert last["action"] == "adjustment.approve_refused"
    assert last["details"]["code"] == "liability_limit_exceeded"
    assert (await ledger.balance(member_id=member_id))["available"] == 0


async def test_a_reversal_cannot_exceed_the_original(db, ledger, clock, two_operators):
    alice, _ = two_operators
    merchant_id = await make_merchant(db)
    member_id = await make_member(ledger)
    issued = await issue(ledger, merchant_id, member_id, 50)
    with pytest.raises(InvalidInput):
        await adjustments.propose_reversal(
            db,
            transaction_id=str(issued["transaction_id"]),
            points=51,
            reason="x",
            proposer=alice,
            now=clock.now(),
        )


async def test_propose_and_approve_through_the_pages(app, web, db, ledger, clock, two_operators):
    import httpx

    alice, bob = two_operators
    merchant_id = await make_merchant(db)
    member_id = await make_member(ledger)
    await sign_in(web, alice.username)
    proposed = await web.post(
        "/console/adjustments/credit",
        data={
            "merchant_id": merchant_id,
            "member_id": member_id,
            "points": "40",
            "reason": "birthday goodwill",
            "csrftoken": await token_for(web, "/console/adjustments"),
        },
    )
    assert proposed.status_code == 303
    page = await web.get("/console/adjustments?status=pending")
    assert "awaiting another operator" in page.text
    async with db.connection() as conn:
        adjustment_id = await conn.fetchval(
            "SELECT adjustment_id FROM adjustments WHERE member_id = $1", member_id
        )
    own = await web.post(
        f"/console/adjustments/{adjustment_id}/approve",
        data={"csrftoken": await token_for(web, "/console/adjustments")},
    )
    assert own.status_code == 303
    assert own.headers["location"].endswith("/console/adjustments")
    assert (await ledger.balance(member_id=member_id))["available"] == 0

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as other:
        await sign_in(other, bob.username)
        approved = await other.post(
            f"/console/adjustments/{adjustment_id}/approve",
            data={"csrftoken": await token_for(other, "/console/adjustments")},
        )
        assert approved.status_code == 303
        assert "/console/ledger/transactions/txn_" in approved.headers["location"]
    assert (await ledger.balance(member_id=member_id))["available"] == 40
