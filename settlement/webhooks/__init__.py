"""Webhooks to merchants (ADR 0022): a transactional outbox and its deliverer.

`outbox` writes events in the transaction of what they report (today `statement.published`, by
the settlement run) and renders their bodies; `delivery` claims due events with FOR UPDATE SKIP
LOCKED, signs each as PROTOCOL.md signs a request (RFC 9421, Ed25519, the exchange's response
key), POSTs it, and records the attempt: delivered on 2xx, else retried with backoff up to
`limits.MAX_ATTEMPTS`, then failed. At least once, no order; receivers dedupe by Idempotency-Key.
An operator puts failed events back (`outbox.requeue_failed`, `alliance webhooks retry`) with a
fresh budget of attempts; their attempts keep their numbering.
"""
