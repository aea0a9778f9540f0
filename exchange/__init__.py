"""The shared points ledger and, later, the signed merchant API over it."""
