"""A refund: the cinema takes back points for a returned ticket, and gives back points a member
spent on a cancelled one.

    .venv/bin/python examples/refund.py

A reversal undoes an issuance or a redemption, in full or in part, under a reference of its own.
An issuance reversed takes points back from the member; a redemption reversed gives them back
(and takes back the money the cinema was to receive). The exchange refuses to reverse more than
the original, whatever the number of refunds.
"""

from __future__ import annotations

import sys
import time

from _demo import CINEMA, demo_client

from sdk import AllianceError, ReversalExceedsOriginalError


def main() -> None:
    card = "card-example-refund"
    booking = f"booking-{time.time_ns()}"

    with demo_client(CINEMA) as cinema:
        try:
            member = cinema.enrol_member(external_ref=card)
            # Two tickets bought with money earn 100 points; one is returned: 50 points go back.
            earned = cinema.issue(member_id=member.member_id, points=100, reference=f"{booking}/1")
            taken_back = cinema.reverse(
                transaction_id=earned.transaction_id, reference=f"{booking}/1/return", points=50
            )
            print(f"ticket returned: {taken_back.points} points taken back ({taken_back.kind})")

            # A ticket paid with 40 points; the screening is cancelled: all 40 come back.
            spent = cinema.redeem(member_id=member.member_id, points=40, reference=f"{booking}/2")
            refund = cinema.reverse(
                transaction_id=spent.transaction_id, reference=f"{booking}/2/cancelled"
            )
            print(
                f"screening cancelled: {refund.points} points back to the member, "
                f"settlement value {refund.settlement_value}"
            )

            try:
                cinema.reverse(transaction_id=spent.transaction_id, reference=f"{booking}/2/again")
            except ReversalExceedsOriginalError:
                print("a second refund of the same ticket is refused, as it should be")

            balance = cinema.get_balance(member_id=member.member_id)
        except AllianceError as error:
            sys.exit(f"the exchange refused: {error} (request {error.request_id})")
    print(f"balance: {balance.available} available")


if __name__ == "__main__":
    main()
