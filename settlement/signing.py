"""What the exchange signs for each run: its period, its size and its Merkle root."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from settlement.repository import RunRow


def root_message(run: RunRow) -> bytes:
    """The signed bytes; a verifier rebuilds them from a statement's fields."""
    start = run.period_start.isoformat() if run.period_start else ""
    return "|".join(
        (
            "alliance-settlement-root-v1",
            run.run_id,
            start,
            run.period_end.isoformat(),
            str(run.transactions),
            run.merkle_root.hex(),
        )
    ).encode()


def signature_valid(run: RunRow, public_key: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(run.root_signature, root_message(run))
    except (InvalidSignature, ValueError):
        return False
    return True
