"""RELIABILITY S5: key rotation and revocation. Two overlapping keys are both accepted; a revoked
key is refused from the instant of revocation (this exchange caches no keys, so there is no TTL to
wait out); a key is refused before its `not_before` and from its `not_after` on.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from merchants import service as merchants
from server.main import create_app
from tests.api.conftest import AUTHORITY, Partner, call
from tests.api.test_error_codes import assert_problem, enrol, issuance
from tests.api.writes import nothing_written
from tests.factories import CREATED_AT


async def second_key(db, partner: Partner, **window) -> Partner:
    """The same merchant, signing with a new key registered with `window`."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key = await merchants.add_key(
        db, merchant_id=partner.merchant_id, public_key=public, now=CREATED_AT, **window
    )
    return Partner(partner.merchant_id, key.key_id, private)


async def issue(client, signer: Partner, clock, member: str):
    return await call(client, signer, clock, "POST", "/v1/issuances", json_body=issuance(member))


async def test_two_overlapping_keys_are_both_accepted(db, client, clock, partner):
    new = await second_key(db, partner)
    member = await enrol(client, partner, clock)
    for signer in (partner, new, partner, new):
        response = await issue(client, signer, clock, member)
        assert response.status_code == 201, response.text
        assert response.json()["merchant_id"] == partner.merchant_id


async def test_revoked_key_is_refused_at_once_and_the_other_key_still_works(
    db, client, clock, partner
):
    new = await second_key(db, partner)
    member = await enrol(client, partner, clock)
    assert (await issue(client, partner, clock, member)).status_code == 201

    await merchants.revoke_key(
        db, merchant_id=partner.merchant_id, key_id=partner.key_id, now=clock.now()
    )
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        for _ in range(3):  # the very next request, and every one after it
            assert_problem(await issue(client, partner, clock, member), 401, "key_revoked")
        reads = await call(client, partner, clock, "GET", "/v1/transactions")
    assert_problem(reads, 401, "key_revoked")
    clock.advance(timedelta(hours=1))
    assert_problem(await issue(client, partner, clock, member), 401, "key_revoked")
    assert (await issue(client, new, clock, member)).status_code == 201


async def test_revocation_holds_across_app_instances(db, clock, partner, app, client):
    """No process keeps a key it has seen: a second app, warmed up on the key before the
    revocation, refuses it right after, as the first does."""
    member = await enrol(client, partner, clock)
    other_app = create_app(database=db, clock=clock)
    async with other_app.router.lifespan_context(other_app):
        transport = httpx.ASGITransport(app=other_app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{AUTHORITY}") as other:
            assert (await issue(other, partner, clock, member)).status_code == 201
            await merchants.revoke_key(
                db, merchant_id=partner.merchant_id, key_id=partner.key_id, now=clock.now()
            )
            for instance in (client, other):
                assert_problem(await issue(instance, partner, clock, member), 401, "key_revoked")


async def test_key_before_its_not_before_is_refused_then_accepted(db, client, clock, partner):
    starts = clock.now() + timedelta(minutes=10)
    future = await second_key(db, partner, not_before=starts)
    member = await enrol(client, partner, clock)
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        assert_problem(await issue(client, future, clock, member), 401, "key_revoked")
        clock.set(starts - timedelta(seconds=1))
        assert_problem(await issue(client, future, clock, member), 401, "key_revoked")
    clock.set(starts)
    assert (await issue(client, future, clock, member)).status_code == 201


async def test_key_from_its_not_after_on_is_refused(db, client, clock, partner):
    ends = clock.now() + timedelta(minutes=10)
    expiring = await second_key(db, partner, not_after=ends)
    member = await enrol(client, partner, clock)
    clock.set(ends - timedelta(seconds=1))
    assert (await issue(client, expiring, clock, member)).status_code == 201
    clock.set(ends)
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        assert_problem(await issue(client, expiring, clock, member), 401, "key_revoked")


async def test_rotation_end_to_end(db, client, clock, partner):
    """Add the new key, use both, revoke the old: only the new one is accepted afterwards."""
    member = await enrol(client, partner, clock)
    new = await second_key(db, partner)
    assert (await issue(client, partner, clock, member)).status_code == 201
    assert (await issue(client, new, clock, member)).status_code == 201
    await merchants.revoke_key(
        db, merchant_id=partner.merchant_id, key_id=partner.key_id, now=clock.now()
    )
    assert_problem(await issue(client, partner, clock, member), 401, "key_revoked")
    assert (await issue(client, new, clock, member)).status_code == 201
    keys = {key.key_id: key for key in await merchants.list_keys(db, partner.merchant_id)}
    assert keys[partner.key_id].revoked_at == clock.now()
    assert keys[new.key_id].revoked_at is None
