from tests.factories import issue, make_member, make_merchant, redeem


async def test_issue_then_redeem_at_another_merchant(db, ledger):
    tea = await make_merchant(db)
    books = await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)
    assert issued["balance_after"] == 100
    redeemed = await redeem(ledger, books, member, 40)
    assert redeemed["balance_after"] == 60
    assert redeemed["settlement_value"] == 38
