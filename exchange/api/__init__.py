"""The signed merchant API v1 (PROTOCOL.md): a thin HTTP layer over the ledger's services."""
