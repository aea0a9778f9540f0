"""A till that issues points: the tea house gives a member 1 point per whole yuan spent.

    .venv/bin/python examples/till.py [card number] [amount in yuan]

The card number is the till's own reference for the member (the alliance finds or enrols the
member for it). The receipt number is the issuance's reference; the SDK makes an idempotency key
for the call and keeps it across its retries, so a flaky network never issues points twice.
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal

from _demo import TEA_HOUSE, demo_client

from sdk import AllianceError


def main() -> None:
    card = sys.argv[1] if len(sys.argv) > 1 else "card-000042"
    amount = Decimal(sys.argv[2]) if len(sys.argv) > 2 else Decimal("128.50")
    receipt = f"till-7/receipt-{time.time_ns()}"
    points = int(amount)  # 1 point per whole yuan, rounded down

    with demo_client(TEA_HOUSE) as client:
        try:
            member = client.enrol_member(external_ref=card)
            issued = client.issue(member_id=member.member_id, points=points, reference=receipt)
            balance = client.get_balance(member_id=member.member_id)
        except AllianceError as error:
            sys.exit(f"the exchange refused: {error} (request {error.request_id})")

    print(f"card {card} is member {member.member_id}" + (" (new)" if member.created else ""))
    print(f"issued {issued.points} points for {amount} yuan on {receipt}: {issued.transaction_id}")
    print(f"balance: {balance.available} available, {balance.held} held")


if __name__ == "__main__":
    main()
