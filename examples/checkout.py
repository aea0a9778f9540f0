"""A checkout that holds points and captures them: the bookshop's web shop lets a member pay with
points earned anywhere in the alliance.

    .venv/bin/python examples/checkout.py

At checkout the shop holds the points for the basket (they can no longer be spent elsewhere);
when the parcel ships it captures what it actually sends (one book is out of stock, so less than
held) and the rest goes back to the member. A basket abandoned before shipping would be voided.
The tea house first issues the member some points, so the example runs on its own.
"""

from __future__ import annotations

import sys
import time

from _demo import BOOKSHOP, TEA_HOUSE, demo_client

from sdk import AllianceClient, AllianceError, InsufficientPointsError


def main() -> None:
    card = "card-example-checkout"
    order = f"web-order-{time.time_ns()}"

    try:
        with demo_client(TEA_HOUSE) as tea_house:
            member = tea_house.enrol_member(external_ref=card)
            tea_house.issue(member_id=member.member_id, points=500, reference=f"{order}/earned")

        with demo_client(BOOKSHOP) as bookshop:
            try:
                hold = bookshop.hold(
                    member_id=member.member_id, points=300, reference=order, expires_in_seconds=900
                )
            except InsufficientPointsError as error:
                sys.exit(f"not enough points for this basket: {error.available} available")
            print(f"held {hold.points} points for {order} until {hold.expires_at:%H:%M:%S} UTC")
            print(f"balance at checkout: {_balance(bookshop, member.member_id)}")

            # Shipping: one book (50 points) is out of stock; capture what ships.
            captured = bookshop.capture(hold_id=hold.hold_id, points=250)
            print(
                f"captured {captured.points} points ({captured.transaction_id}); the bookshop "
                f"will receive {captured.settlement_value} for them at settlement"
            )
            print(f"balance after shipping: {_balance(bookshop, member.member_id)}")
    except AllianceError as error:
        sys.exit(f"the exchange refused: {error} (request {error.request_id})")


def _balance(client: AllianceClient, member_id: str) -> str:
    balance = client.get_balance(member_id=member_id)
    return f"{balance.available} available, {balance.held} held"


if __name__ == "__main__":
    main()
